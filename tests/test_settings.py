"""The settings layer: every documented key settable from the command line, defaults written once,
bad values named with what is allowed, and a workdir's config.json read back to the same run."""

import ast
import dataclasses
import glob
import json
import os
import sys
from unittest import mock

from absl import flags
from ml_collections import config_flags
import pytest

import config_files
from clip_jax import settings
from clip_jax.evaluation import evaluators
from clip_jax import image_preparation
from clip_jax.models import configs as model_configs
from clip_jax.models import resnet
from clip_jax.models import towers

CONFIGS = os.path.join(os.path.dirname(__file__), os.pardir, "configs")
DEMO = os.path.join(CONFIGS, "synthetic_demo.py")


def load_with_flags(config_file: str, *arguments: str) -> settings.Run:
  """Parses `--config=<file> --config.<key>=<value>...` as the programs do, then the settings."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=flag_values, lock_config=True)
  argv = ["program", f"--config={config_file}", *arguments]
  with mock.patch.object(sys, "argv", argv):  # ml_collections reads the overrides from sys.argv.
    flag_values(argv)
  return settings.parse(flag_values.config)


# A non-default value for every key that docs/training.md and docs/data.md list for these
# sections, with where it lands in the parsed run. A ResNet model for its own keys below.
def source_key(name: str):
  """Reads a key of the run's source section (None if its source has no such key)."""
  return lambda run: getattr(run.data.source, name, None)


COMMAND_LINE = {
    "model.name": ("tiny-rn", lambda run: run.model.name),
    "model.overrides.embed_dim": ("24", lambda run: run.model.architecture.embed_dim),
    "model.overrides.dtype": ("float32", lambda run: run.model.architecture.dtype),
    "model.overrides.remat": ("True", lambda run: run.model.architecture.remat),
    "model.overrides.scan": ("True", lambda run: run.model.architecture.scan),
    "model.overrides.attention": ("splash", lambda run: run.model.architecture.attention),
    "model.overrides.activation": ("quick_gelu", lambda run: run.model.architecture.activation),
    "model.overrides.init_logit_scale": ("2.5",
                                         lambda run: run.model.architecture.init_logit_scale),
    "model.overrides.init_logit_bias": ("-5.0", lambda run: run.model.architecture.init_logit_bias),
    "model.overrides.vision.kind": ("modified_resnet",
                                    lambda run: towers.of(run.model.architecture.vision).kind),
    "model.overrides.vision.image_size": ("48",
                                          lambda run: run.model.architecture.vision.image_size),
    "model.overrides.vision.patch_size": ("16",
                                          lambda run: run.model.architecture.vision.patch_size),
    "model.overrides.vision.width": ("96", lambda run: run.model.architecture.vision.width),
    "model.overrides.vision.layers": ("3", lambda run: run.model.architecture.vision.layers),
    "model.overrides.vision.head_width": ("32",
                                          lambda run: run.model.architecture.vision.head_width),
    "model.overrides.vision.mlp_dim": ("200", lambda run: run.model.architecture.vision.mlp_dim),
    "model.overrides.text.context_length": ("20",
                                            lambda run: run.model.architecture.text.context_length),
    "model.overrides.text.vocab_size": ("500", lambda run: run.model.architecture.text.vocab_size),
    "model.overrides.text.width": ("96", lambda run: run.model.architecture.text.width),
    "model.overrides.text.layers": ("3", lambda run: run.model.architecture.text.layers),
    "model.overrides.text.head_width": ("32", lambda run: run.model.architecture.text.head_width),
    "model.overrides.text.mlp_dim": ("100", lambda run: run.model.architecture.text.mlp_dim),
    "model.overrides.text.causal": ("False", lambda run: run.model.architecture.text.causal),
    "model.overrides.text.pool": ("last", lambda run: run.model.architecture.text.pool),
    "model.overrides.text.projection_bias": (
        "True", lambda run: run.model.architecture.text.projection_bias),
    "model.overrides.norm_epsilon": ("1e-06", lambda run: run.model.architecture.norm_epsilon),
    "model.overrides.preprocessing.mean": (
        "(0.5,0.5,0.5)", lambda run: run.model.architecture.preprocessing.mean),
    "model.overrides.preprocessing.std": (
        "(0.25,0.25,0.25)", lambda run: run.model.architecture.preprocessing.std),
    "model.overrides.preprocessing.resize_mode": (
        "squash", lambda run: run.model.architecture.preprocessing.resize_mode),
    "model.overrides.preprocessing.interpolation": (
        "bilinear", lambda run: run.model.architecture.preprocessing.interpolation),
    "data.name": ("webdataset", lambda run: run.data.name),
    "data.image_size": ("48", lambda run: run.data.image_size),
    "data.context_length": ("20", lambda run: run.data.context_length),
    "data.tokenizer": ("words", lambda run: run.data.tokenizer),
    "data.tokenizer_model": ("/m/spm.model", lambda run: run.data.tokenizer_model),
    "data.seed": ("3", lambda run: run.data.seed),
    "data.crop_scale": ("(0.5,1.0)", lambda run: run.data.crop_scale),
    "data.exact_resize": ("True", lambda run: run.data.exact_resize),
    "data.cycle_length": ("4", lambda run: run.data.cycle_length),
    "data.max_image_pixels": ("4096", lambda run: run.data.max_image_pixels),
    "data.shuffle_window": ("64", lambda run: run.data.shuffle_window),
    "data.webdataset.files": ("/d/{00000..00009}.tar", source_key("files")),
    "data.webdataset.image_extensions": ("('png',)", source_key("image_extensions")),
    "data.webdataset.caption_extension": ("json", source_key("caption_extension")),
    "data.webdataset.max_member_bytes": ("1024", source_key("max_member_bytes")),
    "data.tfrecord.files": ("/d/{00000..00009}.tfrecord", source_key("files")),
    "data.tfrecord.image_feature": ("png", source_key("image_feature")),
    "data.tfrecord.caption_feature": ("caption", source_key("caption_feature")),
    "data.tfds.image_feature": ("jpeg", source_key("image_feature")),
    "data.tfds.caption_feature": ("caption", source_key("caption_feature")),
    "data.tfds.dataset": ("laion400m", source_key("dataset")),
    "data.tfds.split": ("train[:90%]", source_key("split")),
    "data.tfds.data_dir": ("/tfds", source_key("data_dir")),
    "data.tfds.mock_examples": ("16", source_key("mock_examples")),
    "data.csv.file": ("/d/train.tsv", source_key("file")),
    "data.csv.separator": (",", source_key("separator")),
    "data.csv.image_column": ("path", source_key("image_column")),
    "data.csv.caption_column": ("caption", source_key("caption_column")),
    "data.synthetic.shapes": ("('star','ring','heart')", source_key("shapes")),
    "data.synthetic.colours": ("('red','blue','orange')", source_key("colours")),
    "data.synthetic.holdout_diagonals": ("(1,)", source_key("holdout_diagonals")),
    "data.synthetic.shape_only_captions": ("0.2", source_key("shape_only_captions")),
    "data.synthetic.colour_only_captions": ("0.3", source_key("colour_only_captions")),
    "loss.name": ("sigmoid", lambda run: run.loss.name),
    "loss.blockwise": ("True", lambda run: run.loss.blockwise),
    "loss.tile_size": ("64", lambda run: run.loss.tile_size),
    "optim.learning_rate": ("3e-4", lambda run: run.optim.learning_rate),
    "optim.b1": ("0.8", lambda run: run.optim.b1),
    "optim.b2": ("0.95", lambda run: run.optim.b2),
    "optim.eps": ("1e-8", lambda run: run.optim.eps),
    "optim.weight_decay": ("0.1", lambda run: run.optim.weight_decay),
    "optim.warmup_steps": ("7", lambda run: run.optim.warmup_steps),
    "optim.grad_clip_norm": ("0.5", lambda run: run.optim.grad_clip_norm),
    "optim.end_learning_rate": ("1e-5", lambda run: run.optim.end_learning_rate),
    "flip.mask_ratio": ("0.5", lambda run: run.flip.mask_ratio),
    "flip.unmasked_steps": ("5", lambda run: run.flip.unmasked_steps),
    "finetune.checkpoint": ("ckpt/vit", lambda run: run.finetune.checkpoint),
    "finetune.lock_image": ("True", lambda run: run.finetune.lock_image),
    "finetune.image_unlocked_blocks": ("1", lambda run: run.finetune.image_unlocked_blocks),
    "finetune.lock_text": ("True", lambda run: run.finetune.lock_text),
    "finetune.text_unlocked_blocks": ("2", lambda run: run.finetune.text_unlocked_blocks),
    "finetune.position_interpolation": ("hf", lambda run: run.finetune.position_interpolation),
    "mesh.data": ("2", lambda run: run.mesh.data),
    "mesh.fsdp": ("-1", lambda run: run.mesh.fsdp),
    "mesh.min_shard_size": ("1024", lambda run: run.mesh.min_shard_size),
    "checkpoint.every_steps": ("10", lambda run: run.checkpoint.every_steps),
    "checkpoint.max_to_keep": ("5", lambda run: run.checkpoint.max_to_keep),
    "checkpoint.async_save": ("False", lambda run: run.checkpoint.async_save),
    "seed": ("9", lambda run: run.seed),
    "total_steps": ("300", lambda run: run.total_steps),
    "global_batch_size": ("64", lambda run: run.global_batch_size),
    "accumulation_steps": ("4", lambda run: run.accumulation_steps),
    "ema_decay": ("0.999", lambda run: run.ema_decay),
    "log_every_steps": ("5", lambda run: run.log_every_steps),
    "nonfinite": ("skip", lambda run: run.nonfinite),
    "max_consecutive_skips": ("5", lambda run: run.max_consecutive_skips),
}
# Keys that only make sense together with others.
COMPANIONS = {
    # A tower of another kind than the named model's: every field of its record.
    "model.overrides.vision.kind": ["--config.model.overrides.vision.image_size=32",
                                    "--config.model.overrides.vision.layers=(1,1)",
                                    "--config.model.overrides.vision.width=16"],
    "model.overrides.vision.image_size": ["--config.data.image_size=48"],
    "data.image_size": ["--config.model.overrides.vision.image_size=48"],
    "model.overrides.text.context_length": ["--config.data.context_length=20"],
    "data.context_length": ["--config.model.overrides.text.context_length=20"],
    "finetune.image_unlocked_blocks": ["--config.finetune.lock_image=True"],
    "finetune.text_unlocked_blocks": ["--config.finetune.lock_text=True"],
    "model.overrides.vision.width": ["--config.model.overrides.vision.head_width=32"],
    "model.overrides.text.width": ["--config.model.overrides.text.head_width=32"],
    "mesh.fsdp": ["--config.mesh.data=1"],
    "data.tokenizer_model": ["--config.data.tokenizer=sentencepiece"],
    "data.name": ["--config.data.webdataset.files=/d/{00000..00009}.tar"],
}
# A source's keys count with data.name set to it, and what it reads from named.
SOURCE_COMPANIONS = {
    "webdataset": ["--config.data.webdataset.files=/d/{00000..00009}.tar"],
    "tfrecord": ["--config.data.tfrecord.files=/d/{00000..00009}.tfrecord"],
    "tfds": ["--config.data.tfds.dataset=laion400m"],
    "csv": ["--config.data.csv.file=/d/train.tsv"],
    "synthetic": [],
}


def companions(key: str) -> list[str]:
  source = key.split(".")[1] if key.startswith("data.") and key.count(".") == 2 else None
  if source not in SOURCE_COMPANIONS:
    return COMPANIONS.get(key, [])
  return [f"--config.data.name={source}", *SOURCE_COMPANIONS[source]]
BASE_FLAGS = ["--config.model.name=tiny-vit", "--config.total_steps=100",
              "--config.optim.warmup_steps=1"]


def expected_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):  # a plain string, as ml_collections takes it
    return text


@pytest.mark.parametrize("key", sorted(COMMAND_LINE))
def test_every_documented_key_is_set_from_the_command_line(key):
  value, read = COMMAND_LINE[key]
  config_file = os.path.join(CONFIGS, "clip_training.py")
  arguments = [*BASE_FLAGS, *companions(key), f"--config.{key}={value}"]
  run = load_with_flags(config_file, *arguments)
  assert read(run) == expected_value(value), key
  assert read(load_with_flags(config_file, *BASE_FLAGS)) != expected_value(value), key


def test_a_resnet_takes_its_stages_from_the_command_line():
  run = load_with_flags(os.path.join(CONFIGS, "clip_training.py"), "--config.model.name=tiny-rn",
                        "--config.model.overrides.vision.layers=(2,1,1)",
                        "--config.model.overrides.vision.image_size=32",
                        "--config.model.overrides.vision.width=8")
  assert run.model.architecture.vision == resnet.ModifiedResNetConfig(
      image_size=32, layers=(2, 1, 1), width=8)
  assert run.data.image_size == 32  # follows the model


def test_the_model_takes_its_preprocessing_from_the_command_line():
  run = load_with_flags(DEMO, "--config.model.overrides.preprocessing.mean=(0.5,0.5,0.5)",
                        "--config.model.overrides.preprocessing.resize_mode=squash")
  assert run.model.architecture.preprocessing == image_preparation.Preprocessing(
      mean=(0.5, 0.5, 0.5), resize_mode="squash")
  with pytest.raises(ValueError, match=r"model\.overrides\.preprocessing\.interpolation="
                                       r"'nearest'; allowed: bicubic, bilinear"):
    load_with_flags(DEMO, "--config.model.overrides.preprocessing.interpolation=nearest")


def test_the_readme_training_command_parses_to_bfloat16():
  run = load_with_flags(DEMO, "--config.total_steps=2000",
                        "--config.model.overrides.dtype=bfloat16")
  assert run.model.architecture.dtype == "bfloat16" and run.total_steps == 2000


def test_sizes_the_data_must_match_follow_the_model():
  run = load_with_flags(DEMO, "--config.model.overrides.vision.image_size=32",
                        "--config.model.overrides.vision.patch_size=8",
                        "--config.model.overrides.text.context_length=12")
  assert (run.data.image_size, run.data.context_length) == (32, 12)
  with pytest.raises(ValueError, match=r"data\.image_size=64 but the model takes 24; allowed: 24"):
    load_with_flags(DEMO, "--config.data.image_size=64")


def test_evaluator_and_mixture_keys_are_set_from_the_command_line():
  run = load_with_flags(os.path.join(CONFIGS, "evaluate.py") + ":cifar10",
                        "--config.evals.cifar10.mock_examples=8",
                        "--config.evals.cifar10.batch_size=64",
                        "--config.evals.cifar10.templates=simple")
  assert (run.evals["cifar10"].mock_examples, run.evals["cifar10"].batch_size) == (8, 64)
  assert run.evals["cifar10"].templates == "simple" and run.evals["cifar10"].split == "test"
  with pytest.raises(ValueError, match=r"data\.sources\.cc12m\.webdataset\.files is empty"):
    load_with_flags(os.path.join(CONFIGS, "mixture.py") + ":tiny")
  run = load_with_flags(os.path.join(CONFIGS, "mixture.py") + ":tiny",
                        "--config.data.sources.laion.webdataset.files=/a/{0..3}.tar",
                        "--config.data.sources.cc12m.webdataset.files=/b/{0..1}.tar",
                        "--config.data.sources.cc12m.webdataset.caption_extension=json",
                        "--config.data.shuffle_window=64")
  laion, cc12m = run.data.sources["laion"], run.data.sources["cc12m"]
  assert (laion.source.files, laion.weight, laion.source.caption_extension) == (
      "/a/{0..3}.tar", 4.0, "txt")
  assert (cc12m.source.files, cc12m.weight, cc12m.source.caption_extension) == (
      "/b/{0..1}.tar", 1.0, "json")
  assert laion.shuffle_window == cc12m.shuffle_window == 64  # shared keys reach every source
  assert laion.image_size == 64  # and the model's size


# Every shipped config with the arguments it takes.
SHIPPED = {name: (None,) for name in ("synthetic_demo", "evaluate")}
SHIPPED.update({name: (None, "tiny") for name in ("clip_training", "webdataset", "tfrecord",
                                                   "tfds", "csv", "mixture", "siglip")})
SHIPPED["evaluate"] = (None, "imagenet,coco", "cifar10_probe")


def test_every_shipped_config_is_listed_here():
  assert set(SHIPPED) == {os.path.basename(path)[:-3]
                          for path in glob.glob(os.path.join(CONFIGS, "*.py"))}


def fill_required_data_keys(config):
  """What the docs say to give on the command line: where the data is."""
  required = dict(webdataset="files", tfrecord="files", csv="file")
  if config.data.name in required:
    config.data[config.data.name][required[config.data.name]] = "/data/train"
  for source in config.data.sources.values():
    source.webdataset.files = "/data/{00000..00009}.tar"
  if config.data.tokenizer in ("sentencepiece", "siglip"):
    config.data.tokenizer_model = "/data/spiece.model"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_config_parses_has_every_key_and_restates_no_default(name, monkeypatch):
  """A config holds every key (so that all can be set from the command line), and sets only what
  differs from its base: an assignment of the value a key already has would be a second home
  for a default."""
  restated = []
  set_item = settings.ml_collections.ConfigDict.__setitem__

  def recording_set_item(self, key, value):
    if key in self and not isinstance(value, settings.ml_collections.ConfigDict) and (
        self[key] is not None and self[key] == value):
      restated.append((key, value))
    set_item(self, key, value)

  monkeypatch.setattr(settings.ml_collections.ConfigDict, "__setitem__", recording_set_item)
  for argument in SHIPPED[name]:
    config = settings.load_config_file(os.path.join(CONFIGS, f"{name}.py"), argument)
    fill_required_data_keys(config)
    settings.parse(config)
    defaults = settings.default_config()
    for section in ("data", "loss", "optim", "flip", "finetune", "mesh", "checkpoint",
                    "distributed"):
      assert set(config[section].keys()) == set(defaults[section].keys()), (name, section)
    assert set(config.model.overrides.keys()) == set(defaults.model.overrides.keys()), name
  assert not restated, (name, restated)


@pytest.mark.parametrize("changes, message", [
    ({"model.name": "ViT-Z-99"},
     r"model\.name='ViT-Z-99' is not a known model; allowed: .*ViT-B-32"),
    ({"data.name": "no-such-data"}, r"data\.name='no-such-data'; allowed: 'synthetic'"),
    # (and whatever losses plug-ins imported by other tests in this process registered)
    ({"loss.name": "triplet"}, r"loss\.name='triplet'; allowed: 'softmax', 'sigmoid'"),
    ({"loss.tile_size": 0}, r"loss\.tile_size=0; allowed: integers >= 1\."),
    ({"nonfinite": "ignore"}, r"nonfinite='ignore'; allowed: 'stop', 'skip'\."),
    ({"optim.learning_rate": -1e-3}, r"optim\.learning_rate=-0\.001; allowed: numbers > 0"),
    ({"optim.warmup_steps": 1000}, r"optim\.warmup_steps=1000; allowed: .* 999\."),
    ({"optim.warmup_steps": 2.5}, r"optim\.warmup_steps=2\.5; allowed: integers >= 0"),
    ({"optim.b2": 1.0}, r"optim\.b2=1\.0; allowed: numbers in \[0, 1\)"),
    ({"optim.grad_clip_norm": -1.0}, r"optim\.grad_clip_norm=-1\.0"),
    ({"optim.end_learning_rate": 1e-2}, r"optim\.end_learning_rate=0\.01; allowed: .* 0\.001"),
    ({"total_steps": 0}, r"config\.total_steps=0; allowed: integers >= 1"),
    ({"flip.mask_ratio": 1.0}, r"flip\.mask_ratio=1\.0; allowed: numbers from 0 .* up to, not "
                               r"including, 1\."),
    ({"flip.unmasked_steps": 1001}, r"flip\.unmasked_steps=1001; allowed: integers from 0 to "
                                    r"total_steps=1000\."),
    ({"flip.mask_ratio": 0.5, "model.name": "tiny-rn", "model.overrides": {}},
     r"flip\.mask_ratio=0\.5 with a ModifiedResNet image tower.*allowed: 0, or a ViT model\."),
    ({"finetune.image_unlocked_blocks": 1}, r"without finetune\.lock_image=True"),
    ({"finetune.lock_text": True, "finetune.text_unlocked_blocks": 3},
     r"finetune\.text_unlocked_blocks=3; allowed: 0 to 2, the tower's blocks\."),
    ({"finetune.lock_image": True, "finetune.image_unlocked_blocks": 1,
      "model.overrides.scan": True}, r"with model\.overrides\.scan=True: scanned blocks"),
    ({"distributed.mode": "pod"}, r"distributed\.mode='pod'; allowed: 'off', 'auto', 'explicit'\."),
    ({"distributed.num_processes": 2},
     r"distributed\.num_processes=2 with distributed\.mode='off'"),
    ({"distributed.mode": "explicit", "distributed.num_processes": 2,
      "distributed.process_id": 0},
     r"distributed\.coordinator_address is unset.*'explicit' needs it"),
    ({"distributed.mode": "explicit", "distributed.coordinator_address": "localhost"},
     r"distributed\.coordinator_address='localhost'; allowed: 'host:port'"),
    ({"distributed.mode": "auto", "distributed.num_processes": 2, "distributed.process_id": 2},
     r"distributed\.process_id=2; allowed: integers from 0 to num_processes - 1 = 1\."),
    ({"distributed.mode": "auto", "distributed.local_device_ids": (0, -1)},
     r"distributed\.local_device_ids=\(0, -1\)"),
    ({"mesh.data": -1, "mesh.fsdp": -1}, r"mesh\.data=-1 and mesh\.fsdp=-1; allowed: -1 for one"),
    ({"mesh.data": 0}, r"mesh\.data=0; allowed: integers >= 1, or -1"),
    ({"data.synthetic.holdout_diagonals": (0, 1, 2, 3, 4, 5)},
     r"data\.synthetic\.holdout_diagonals=\(0, 1, 2, 3, 4, 5\); allowed: fewer than 6"),
    ({"data.synthetic.shapes": ("circle", "blob")},
     r"data\.synthetic\.shapes=\('circle', 'blob'\); allowed: two or more distinct names of "
     r"circle, square"),
    ({"data.synthetic.shape_only_captions": 0.6, "data.synthetic.colour_only_captions": 0.6},
     r"shape_only_captions=0\.6 and colour_only_captions=0\.6; allowed: a sum <= 1\."),
    ({"data.tokenizer": "sentencepiece"}, r"data\.tokenizer_model='': .*SentencePiece"),
    ({"data.name": "mixture"}, r"data\.name='mixture' with 0 data\.sources"),
    ({"data.name": "webdataset"}, r"data\.webdataset\.files is empty, and the webdataset source "
                                  r"reads from it; allowed: a brace pattern"),
    ({"data.name": "csv"}, r"data\.csv\.file is empty, and the csv source reads from it"),
    ({"data.name": "tfds"}, r"data\.tfds\.dataset is empty, and the tfds source"),
    ({"data.files": "/d/0.tar"}, r"data\.files='/d/0\.tar' is not a setting shared by the "
                                 r"sources; allowed: data\.webdataset\.files, in the section"),
    ({"data.name": "tfds", "data.tfds.dataset": "coco_captions", "data.csv.file": "/t.tsv"},
     r"data\.csv\.file is set but data\.name='tfds'; allowed: data\.name='csv', or the keys of "
     r"data\.tfds's own section"),
    ({"data.synthetic.holdout_diagonals": (-1,)},
     r"data\.synthetic\.holdout_diagonals=\(-1,\); allowed: fewer than 6 distinct values, each "
     r"in 0\.\.5"),
    ({"model.overrides.vision.patch_size": 5},
     r"model\.overrides\.vision\.patch_size=5 does not divide vision\.image_size=24"),
    ({"model.overrides.dtype": "float16"}, r"dtype='float16'; allowed: float32, bfloat16\."),
])
def test_a_bad_value_names_the_key_the_value_and_what_is_allowed(changes, message):
  config = settings.load_config_file(DEMO).to_dict()  # Plain dicts take values of any type.
  for key, value in changes.items():
    section, _, name = key.rpartition(".")
    target = config
    for part in filter(None, section.split(".")):
      target = target[part]
    target[name] = value
  with pytest.raises(ValueError, match=message):
    settings.parse(config)


@pytest.mark.parametrize("name", ["webdataset", "tfds", "csv", "mixture"])
def test_a_config_json_of_the_older_layout_parses_to_the_same_run(name):
  """A workdir's config.json written before a source's keys moved to its section."""
  config = config_files.load(name, "tiny")
  fill_required_data_keys(config)
  if name == "tfds":
    config.data.tfds.caption_feature = "caption"
  run = settings.parse(config)
  stored = json.loads(settings.to_config(run).to_json())
  old = config_files.old_layout(stored)
  if name == "mixture":
    old["data"]["sources"] = {part: {key: value for key, value in values.pop(
        "webdataset").items()} | values for part, values in old["data"]["sources"].items()}
  assert old != stored
  with pytest.raises(ValueError, match=r"is not a setting shared by the sources"):
    settings.parse(old)
  assert settings.parse(settings.upgraded(old)) == run
  assert settings.upgraded(stored) == stored  # today's layout is left as it is


def test_a_run_that_reads_no_data_may_leave_its_source_unset():
  # clip_jax.plan needs the batch's shapes, not the files; training still refuses without them.
  for name in ("webdataset.py", "mixture.py:tiny"):
    config = settings.load_config_file(*os.path.join(CONFIGS, name).split(":"))
    with pytest.raises(ValueError, match=r"files is empty"):
      settings.parse(config)
    run = settings.parse(config, require_data=False)
    assert run.data.source is None  # not read
    assert run.data.image_size == run.model.architecture.vision.image_size


def test_unknown_keys_are_named_with_the_allowed_ones():
  config = settings.load_config_file(DEMO).to_dict()
  config["flip"]["unmasked_step"] = 2
  with pytest.raises(ValueError, match=r"flip\.unmasked_step=2 is not a setting; allowed: "
                                       r"mask_ratio, unmasked_steps\."):
    settings.parse(config)
  config = settings.load_config_file(DEMO).to_dict()
  config["model"]["overrides"]["vision"]["depth"] = 2
  with pytest.raises(ValueError, match=r"model\.overrides\.vision\.depth=2 for "
                                       r"VisionTransformerConfig; allowed: image_size"):
    settings.parse(config)


@pytest.mark.parametrize("evaluator, message", [
    (dict(type="zeroshot", dataset="cifar10", split="test"),
     r"evals\.bad\.type='zeroshot'; allowed: 'zero_shot', 'retrieval', 'linear_probe', "
     r"'benchmark'(, '\w+')*\."),  # and a plug-in's that another test registered in this process
    (dict(type="zero_shot", dataset="cifar10", split="test", every_steps=-1),
     r"evals\.bad\.every_steps=-1; allowed: integers >= 0 \(0: only at the end\)\."),
    (dict(type="zero_shot", dataset="cifar10"),
     r"evals\.bad\.split is missing; allowed: a split of 'cifar10'"),
    (dict(type="retrieval", dataset="coco_captions", num_images=5, split="val"),
     r"evals\.bad\.num_images=5 is not a key of a retrieval evaluator on 'coco_captions'; "
     r"allowed: type, dataset, every_steps, batch_size, split, data_dir, .*caption_feature\."),
    (dict(type="linear_probe", dataset="synthetic"),
     r"evals\.bad\.dataset='synthetic' with type='linear_probe'; allowed: a TFDS image-label"),
])
def test_a_bad_evaluator_names_the_key_the_value_and_what_is_allowed(evaluator, message):
  config = settings.load_config_file(DEMO)
  config.evals.bad = settings.evaluator(**evaluator)
  with pytest.raises(ValueError, match=message):
    settings.parse(config)


def test_an_evaluator_or_source_of_unknown_keys_is_refused_where_it_is_written():
  with pytest.raises(ValueError, match=r"splt='val' is not a key of Evaluator; allowed: type, "):
    settings.evaluator(type="retrieval", splt="val")
  with pytest.raises(ValueError, match=r"fie='y' is not a key of Data; allowed: name, "):
    settings.data_source(name="csv", file="x", fie="y")


def test_synthetic_evaluators_need_synthetic_training_data():
  config = settings.load_config_file(os.path.join(CONFIGS, "tfds.py"), "tiny")
  config.evals.zero_shot = settings.evaluator(every_steps=5)
  with pytest.raises(ValueError, match=r"evals\.zero_shot\.dataset='synthetic' evaluates with "
                                       r"the synthetic data's world and words, but "
                                       r"data\.name='tfds'; allowed: a TFDS dataset"):
    settings.parse(config)


def test_an_old_style_partial_config_fills_in_every_default():
  """Configs (and workdirs' config.json) may give any subset of keys."""
  run = settings.parse(dict(model=dict(name="tiny-vit"), data=dict(tokenizer="words"),
                            total_steps=10, optim=dict(warmup_steps=1),
                            evals=dict(zero_shot=dict(every_steps=5))))
  assert run.optim == settings.Optim(warmup_steps=1) and run.data.image_size == 32
  assert run.evals["zero_shot"] == settings.Evaluator(every_steps=5)


@pytest.mark.parametrize("path, argument", [(DEMO, None),
                                            (os.path.join(CONFIGS, "evaluate.py"), None),
                                            (os.path.join(CONFIGS, "mixture.py"), "tiny")])
def test_a_run_round_trips_through_its_config(path, argument):
  config = settings.load_config_file(path, argument)
  fill_required_data_keys(config)
  config.loss.name = "sigmoid"
  config.model.overrides.dtype = "bfloat16"
  run = settings.parse(config)
  assert settings.parse(settings.to_config(run)) == run
  assert settings.parse(json.loads(settings.to_config(run).to_json())) == run  # config.json


def test_the_sigmoid_loss_sets_siglip_scale_and_bias_unless_the_model_does():
  config = settings.load_config_file(DEMO)
  config.loss.name = "sigmoid"
  assert settings.parse(config).model.architecture.init_logit_bias == -10.0
  config.model.overrides.init_logit_bias = -5.0
  assert settings.parse(config).model.architecture.init_logit_bias == -5.0


def test_every_name_is_registered_once_where_it_is_implemented():
  """Settings check names against the registries that the implementing modules fill as they are
  imported: nothing lists them a second time."""
  settings.default_config()  # imports the built-in data sources, tokenizers and evaluators
  # (A plug-in registered by another test in this process comes after them.)
  assert settings.SOURCES.names()[:6] == ["synthetic", "webdataset", "tfrecord", "tfds", "csv",
                                          "mixture"]
  assert settings.TOKENIZERS.names()[:5] == ["clip_bpe", "sentencepiece", "siglip", "gemma",
                                             "words"]
  assert settings.EVALUATORS.names()[:3] == ["zero_shot", "retrieval", "linear_probe"]
  assert settings.EVALUATORS.get("retrieval", "type").run is evaluators._run_retrieval  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="A data source named 'csv' is registered already"):
    settings.SOURCES.register(settings.SourceKind(name="csv"))
  assert settings.DEFAULT_MODEL in model_configs.MODELS


def test_defaults_are_written_once():
  """default_config is made from the dataclasses: changing a dataclass default changes it."""
  defaults = settings.default_config()
  for name, cls in (("optim", settings.Optim), ("loss", settings.Loss), ("flip", settings.Flip),
                    ("checkpoint", settings.Checkpoint)):
    for field in dataclasses.fields(cls):
      assert defaults[name][field.name] == field.default, (name, field.name)


def test_the_command_line_test_covers_every_key_of_these_sections():
  """COMMAND_LINE above sets every key of the sections the docs list, the architecture included:
  a key added to settings without a command-line test fails here."""
  keys = {f"{section}.{field.name}"
          for section, cls in (("data", settings.Data), ("loss", settings.Loss),
                               ("optim", settings.Optim), ("flip", settings.Flip),
                               ("finetune", settings.Finetune), ("mesh", settings.Mesh),
                               ("checkpoint", settings.Checkpoint))
          for field in dataclasses.fields(cls) if field.name not in ("source", "sources",
                                                                       "weight")}
  # The built-in sources' (a plug-in that another test registered in this process is not one).
  keys |= {f"data.{kind.name}.{field.name}" for kind in settings.SOURCES.entries()
           if kind.keys and kind.keys.__module__.startswith("input_pipeline.")
           for field in dataclasses.fields(kind.keys)}
  overrides = settings.default_config().model.overrides
  keys |= {f"model.overrides.{key}" for key in overrides.keys()
           if key not in model_configs.RECORDS}
  keys |= {f"model.overrides.{record}.{key}" for record in model_configs.RECORDS
           for key in overrides[record].keys()}
  keys |= {"model.name"} | {field.name for field in dataclasses.fields(settings.Run)
                            if field.name not in ("model", "evals", "data", "loss", "optim",
                                                  "flip", "finetune", "mesh", "checkpoint",
                                                  "distributed")}
  assert keys == set(COMMAND_LINE)
