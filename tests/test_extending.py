"""A kind of image tower (tests/plugin_tower.py), a loss (tests/plugin_loss.py), an evaluator
(tests/plugin_evaluator.py) and a data source (tests/plugin_source.py) defined outside the package,
registered as plug-ins, without an edit inside clip_jax: a run with the tower trains (FLIP's patch
dropping included), its workdir loads in another process that only has the config to go by, and
its step plans; a run with the loss trains with it and ends with the evaluator's metric; a run
reads the source's every record and trains on it."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

import command_server
import tiny_runs
import plugin_tower
from clip_jax import flops
from clip_jax import losses
from clip_jax import plan
from clip_jax import settings
from clip_jax import train
import input_pipeline
from input_pipeline import tokenizers
from input_pipeline import write_shards

VISION = dict(kind="mean_patch", image_size=32, patch_size=8, width=24)


def plugin_config(**changes) -> ml_collections.ConfigDict:
  config = tiny_runs.tiny_config()
  config.model.plugins = ("plugin_tower",)
  config.model.overrides.vision = ml_collections.ConfigDict(VISION)
  config.update_from_flattened_dict(changes)
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("plugin") / "run")
  config = plugin_config(**{"flip.mask_ratio": 0.5, "flip.unmasked_steps": 2})
  return workdir, train.train_and_evaluate(config, workdir)


def test_a_plugin_tower_trains_with_patch_dropping(trained):
  _, final = trained
  assert np.isfinite(final["loss"])
  assert 0.0 <= final["zero_shot/shape_top1_seen"] <= 1.0  # zero-shot ran on its features
  run = settings.parse(plugin_config(**{"flip.mask_ratio": 0.5}))
  assert run.model.architecture.vision == plugin_tower.MeanPatchConfig(
      image_size=32, patch_size=8, width=24)
  masked = flops.train_flops_per_sample(run.model.architecture, 16, mask_ratio=0.5)["image"]
  assert masked.forward < flops.train_flops_per_sample(run.model.architecture, 16)["image"].forward


def test_its_workdir_loads_where_only_the_config_names_the_plugin(trained):
  workdir, _ = trained
  loaded = command_server.run_python([
      "-c", "import sys, numpy as np, clip_jax; model, variables, preprocess, tokenize = "
      "clip_jax.load(sys.argv[1]); features = model.apply(variables, preprocess(np.zeros((40, 30, "
      "3), np.uint8)), tokenize(['a red circle']))['image_features']; print(type(model.config."
      "vision).__name__, features.shape)", workdir],
      cwd=os.path.dirname(os.path.abspath(__file__)))  # where the plug-in is on the Python path
  assert loaded.returncode == 0, loaded.stderr[-3000:]
  assert loaded.stdout.split() == ["MeanPatchConfig", "(1,", "16)"]


def test_it_converts_once_it_registers_a_weight_layout():
  """Every built-in kind has its layout; a plug-in's without one is refused by name."""
  from clip_jax import convert  # pylint: disable=g-import-not-at-top
  from clip_jax.convert import tower_layouts  # pylint: disable=g-import-not-at-top
  assert tower_layouts.LAYOUTS.names() == ["vit", "modified_resnet", "siglip_vit"]
  architecture = settings.parse(plugin_config()).model.architecture
  with pytest.raises(ValueError, match=r"A MeanPatch image tower has no weight layout to convert; "
                                       r"allowed: towers of kind 'vit', 'modified_resnet', "
                                       r"'siglip_vit'"):
    convert.open_clip_model_config(architecture)


def test_its_step_plans(trained):
  run = settings.parse(plugin_config())
  planned = plan.plan_run(run, jax.devices()[:2], "cpu")
  step = planned.steps[0]
  assert step.model_flops == pytest.approx(16 * flops.train_flops_per_sample(
      run.model.architecture, 16)["total"].total)
  assert step.hbm_traffic > 0


def test_a_plugin_loss_trains_and_a_plugin_evaluator_evaluates(tmp_path):
  config = plugin_config(**{"loss.name": "image_to_text_margin"})
  config.model.plugins = ("plugin_tower", "plugin_loss", "plugin_evaluator")
  config.evals.gap = settings.evaluator(type="modality_gap", num_images=32, batch_size=16)
  run = settings.parse(config)
  assert run.loss.name == "image_to_text_margin"
  assert run.model.architecture.init_logit_bias == 0.0  # what the loss asks of the model
  assert run.evals["gap"].type == "modality_gap"
  final = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(final["loss"])
  assert 0.0 < final["gap/modality_gap"] <= 2.0  # between two points of the unit ball
  config.evals.gap.dataset = "cifar10"
  with pytest.raises(ValueError, match=r"evals\.gap\.dataset='cifar10' with type='modality_gap'; "
                                       r"allowed: 'synthetic'\."):
    settings.parse(config)
  import plugin_loss  # pylint: disable=g-import-not-at-top
  assert losses.of("image_to_text_margin") is plugin_loss.KIND
  with pytest.raises(ValueError, match="A loss named 'image_to_text_margin' is registered"):
    losses.register(plugin_loss.KIND)
  config.loss.blockwise = True
  with pytest.raises(ValueError, match=r"loss\.blockwise=True with loss\.name="
                                       r"'image_to_text_margin', which has no blockwise"):
    settings.parse(config)


def test_a_plugin_source_is_what_the_run_trains_on(tmp_path):
  lines, captions = [], []
  for index, sample in enumerate(write_shards.read_synthetic(16, image_size=24)):
    (tmp_path / f"{index}.jpg").write_bytes(sample.image)
    lines.append(json.dumps({"picture": f"{index}.jpg", "text": sample.caption}))
    captions.append(sample.caption)
  (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
  config = tiny_runs.tiny_config()
  config.model.plugins = ("plugin_source",)
  config.evals = ml_collections.ConfigDict()  # the synthetic evaluator needs the synthetic data
  config.data.name = "jsonl"
  config.data.jsonl = ml_collections.ConfigDict(dict(
      file=str(tmp_path / "pairs.jsonl"), image_key="picture", caption_key="text"))
  run = settings.parse(config)
  import plugin_source  # pylint: disable=g-import-not-at-top
  assert run.data.source == plugin_source.JsonLines(
      file=str(tmp_path / "pairs.jsonl"), image_key="picture", caption_key="text")
  # An epoch is every line once, whatever the shuffle.
  batch = next(input_pipeline.create_dataset(run.data, global_batch_size=16))
  expected = tokenizers.create_tokenizer(run.data).tokenize(captions)
  assert sorted(map(bytes, batch["text"])) == sorted(map(bytes, expected))
  final = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(final["loss"])
  # A workdir's config.json holds the plug-in's section only where the run names the plug-in:
  # another process, which has not imported it, still reads the others.
  assert "jsonl" in settings.to_config(run).data
  assert "jsonl" not in settings.to_config(settings.parse(tiny_runs.tiny_config())).data
  config.data.jsonl.file = ""
  with pytest.raises(ValueError, match=r"data\.jsonl\.file is empty, and the jsonl source reads "
                                       r"from it; allowed: the path of a JSON Lines file\."):
    settings.parse(config)


def test_an_unknown_loss_is_named_with_the_registered_ones():
  with pytest.raises(ValueError, match=r"loss\.name='triplet'; allowed: 'softmax', 'sigmoid'"):
    settings.parse(plugin_config(**{"loss.name": "triplet"}))


def test_a_kind_is_registered_once_and_an_unknown_one_is_named():
  with pytest.raises(ValueError, match="An image tower of record MeanPatchConfig is registered"):
    plugin_tower.towers.register(plugin_tower.TOWER)
  with pytest.raises(ValueError, match=r"model\.overrides\.vision\.kind='mean_pool' is not a "
                                       r"registered image tower; allowed: 'modified_resnet', "
                                       r"'vit', 'siglip_vit', 'mean_patch' \(or a plug-in's, "
                                       r"named in model\.plugins\)\."):
    settings.parse(plugin_config(**{"model.overrides.vision.kind": "mean_pool"}))
