"""The training program on 8 CPU devices: exact resume, preemption, restore onto another mesh, the
non-finite guard and config errors. A tiny model keeps every run to a few seconds."""

import json
import os
import shutil
import signal
import time

import jax
import numpy as np
import pytest

import clip_jax
import input_pipeline
from clip_jax import finetune
from clip_jax import models
from clip_jax import pretrained
from clip_jax import settings
from clip_jax import train
import command_server
import config_files
import shard_files
import tiny_runs
from xla_flags import xla_flags

@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  """The reference: the tiny run's steps without interruption."""
  workdir = str(tmp_path_factory.mktemp("straight"))
  config = tiny_runs.tiny_config()
  final = train.train_and_evaluate(config, workdir)
  return workdir, config, final


def test_run_logs_evaluates_and_plots(straight_run):
  workdir, _, final = straight_run
  assert sorted(tiny_runs.losses_by_step(workdir)) == list(range(1, tiny_runs.TOTAL_STEPS + 1))
  assert all(np.isfinite(list(tiny_runs.losses_by_step(workdir).values())))
  assert "zero_shot/shape_top1_seen" in final and 0.0 <= final["zero_shot/shape_top1_seen"] <= 1.0
  assert os.path.getsize(os.path.join(workdir, "training_curves.png")) > 1000
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))


def test_a_workdir_loads_where_its_evaluators_data_is_absent(straight_run, tmp_path):
  """A run configured with ImageNet, loaded on a machine without it: loading reads the config and
  the checkpoint, and checks nothing that only training needs."""
  workdir = str(tmp_path / "copy")
  shutil.copytree(straight_run[0], workdir)
  config_path = os.path.join(workdir, pretrained.WORKDIR_CONFIG)
  with open(config_path) as file:
    saved = json.load(file)
  saved["evals"]["imagenet"] = dict(type="zero_shot", dataset="imagenet2012", split="validation",
                                    data_dir=str(tmp_path / "absent"), every_steps=1000)
  with open(config_path, "w") as file:
    json.dump(saved, file)
  with pytest.raises(ValueError,
                     match=r"evals\.imagenet\.split='validation' of 'imagenet2012'.*not prepared"):
    train.check_resources(settings.parse(saved))  # what training start-up would say
  model, variables, preprocess, tokenize = clip_jax.load(workdir)
  features = model.apply(variables, preprocess(np.zeros((30, 40, 3), np.uint8)),
                         method=model.encode_image)
  assert features.shape == (1, 16) and tokenize("a red star").shape == (1, 16)
  with open(config_path, "r+") as file:  # cut short
    file.truncate(20)
  with pytest.raises(ValueError, match=rf"^{config_path} is not valid JSON \("):
    clip_jax.load(workdir)


def run_preempted_then_resumed(config, workdir, preempt_at, monkeypatch):
  """Runs until SIGTERM after step `preempt_at`, checks the stop, then resumes to the end."""
  original_write = train.metrics_lib.MetricsLogger.write

  def write_then_preempt(self, step, scalars):
    original_write(self, step, scalars)
    if step == preempt_at and "loss" in scalars:
      os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(train.metrics_lib.MetricsLogger, "write", write_then_preempt)
  train.train_and_evaluate(config, workdir)
  assert max(tiny_runs.losses_by_step(workdir)) == preempt_at
  assert not os.path.exists(os.path.join(workdir, "training_curves.png"))
  monkeypatch.setattr(train.metrics_lib.MetricsLogger, "write", original_write)
  return train.train_and_evaluate(config, workdir)  # resumes by itself from the same workdir


def assert_same_run(workdir, reference_dir, config):
  """Same losses step by step, the same data state and bit-identical final parameters."""
  assert tiny_runs.losses_by_step(workdir) == tiny_runs.losses_by_step(reference_dir)
  resumed, resumed_data, step = tiny_runs.restore_params(workdir, config, jax.devices())
  reference, reference_data, _ = tiny_runs.restore_params(reference_dir, config, jax.devices())
  assert step == config.total_steps and resumed_data == reference_data
  for name, value in tiny_runs.flat_params(reference).items():
    np.testing.assert_array_equal(tiny_runs.flat_params(resumed)[name], value, err_msg=name)


def test_exact_resume_after_preemption(straight_run, tmp_path, monkeypatch):
  """k steps, SIGTERM, restart to 2k: same losses step by step, bit-identical parameters."""
  reference_dir, config, _ = straight_run
  # Not a checkpoint step: the preemption save must happen.
  preempt_at = tiny_runs.TOTAL_STEPS // 2 + 1
  run_preempted_then_resumed(config, str(tmp_path), preempt_at, monkeypatch)
  assert_same_run(str(tmp_path), reference_dir, config)


def test_moving_average_resumes_bit_identically_and_is_evaluated(straight_run, tmp_path,
                                                                 monkeypatch, capsys):
  """ema_decay > 0: a run preempted and resumed ends with the average (and the parameters) of a
  run without a stop; the average changes nothing else (the losses of the run without one);
  every evaluation reports both sets; clip_jax.load reads either."""
  config = tiny_runs.tiny_config(ema_decay=0.5)
  reference_dir, workdir = str(tmp_path / "straight"), str(tmp_path / "resumed")
  final = train.train_and_evaluate(config, reference_dir)
  assert tiny_runs.losses_by_step(reference_dir) == tiny_runs.losses_by_step(straight_run[0])
  run_preempted_then_resumed(config, workdir, tiny_runs.TOTAL_STEPS // 2 + 1, monkeypatch)
  assert_same_run(workdir, reference_dir, config)
  resumed, _, _ = tiny_runs.restore_params(workdir, config, jax.devices())
  reference, _, _ = tiny_runs.restore_params(reference_dir, config, jax.devices())
  flat = lambda tree: {jax.tree_util.keystr(path): np.asarray(leaf)  # noqa: E731
                       for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
  for name, value in flat(reference.ema_params).items():
    np.testing.assert_array_equal(flat(resumed.ema_params)[name], value, err_msg=name)

  for name in ("zero_shot/shape_top1_seen", "ema/zero_shot/shape_top1_seen"):
    assert 0.0 <= final[name] <= 1.0
  assert (f"step {tiny_runs.TOTAL_STEPS} | EMA zero-shot top-1 on new images: shape "
          in capsys.readouterr().out)
  _, ema_variables, _, _ = clip_jax.load(workdir, use_ema=True)
  _, variables, _, _ = clip_jax.load(workdir)
  for name, value in flat(resumed.ema_params).items():
    np.testing.assert_array_equal(flat(ema_variables["params"])[name], value, err_msg=name)
    np.testing.assert_array_equal(flat(variables["params"])[name], flat(resumed.params)[name])
  with pytest.raises(ValueError, match="keeps no moving average.*ema_decay=0"):
    clip_jax.load(straight_run[0], use_ema=True)


def test_training_on_webdataset_shards_resumes_exactly_and_counts_bad_samples(
    tmp_path, monkeypatch):
  for shard in range(3):
    members = [("bad.jpg", b"not an image"), ("bad.txt", b"a caption")]
    for index in range(7):
      image = shard_files.encode(shard_files.photo(40, 48, seed=10 * shard + index), "JPEG")
      members += [(f"{index:04d}.jpg", image), (f"{index:04d}.txt", f"photo {index}".encode())]
    shard_files.write_tar(str(tmp_path / f"{shard:05d}.tar"), members)
  config = tiny_runs.webdataset_config(f"{tmp_path}/{{00000..00002}}.tar")
  reference_dir, workdir = str(tmp_path / "straight"), str(tmp_path / "resumed")
  final = train.train_and_evaluate(config, reference_dir)
  # 32 samples: all 24 good ones of epoch 1 (so its 3 bad ones too), then some of epoch 2.
  assert 3 <= final["data/skipped_samples"] <= 6
  run_preempted_then_resumed(config, workdir, 3, monkeypatch)
  assert_same_run(workdir, reference_dir, config)


@pytest.mark.parametrize("name", ["webdataset", "tfrecord", "tfds", "csv", "mixture"])
@pytest.mark.parametrize("scale", ["tiny", None])
def test_real_data_configs_tokenize_with_clip_bpe(name, scale):
  config = config_files.load(name, scale)
  where = dict(webdataset=("files", "/data/{0..9}.tar"), tfrecord=("files", "/data/*.tfrecord"),
               csv=("file", "/data/train.tsv"))
  if name in where:
    config.data[name][where[name][0]] = where[name][1]
  for source in config.data.sources.values():
    source.webdataset.files = "/data/{0..9}.tar"
  run = settings.parse(config)
  assert run.data.tokenizer == "clip_bpe" and run.data.name == name
  assert run.model.architecture.text.vocab_size == 49_408  # CLIP's BPE vocabulary


@pytest.mark.parametrize("num_devices", [4, 1])
def test_restore_onto_another_mesh(straight_run, num_devices):
  workdir, config, _ = straight_run
  on_eight, _, _ = tiny_runs.restore_params(workdir, config, jax.devices())
  on_fewer, _, _ = tiny_runs.restore_params(workdir, config, jax.devices()[:num_devices])
  leaf = jax.tree.leaves(on_fewer.params)[0]
  assert len(leaf.sharding.device_set) == num_devices
  for name, value in tiny_runs.flat_params(on_eight).items():
    np.testing.assert_array_equal(tiny_runs.flat_params(on_fewer)[name], value, err_msg=name)


def test_accumulated_steps_log_the_losses_of_whole_batch_steps(straight_run, tmp_path):
  """`--config.accumulation_steps=4` on the command line, on four devices: every step's 16
  examples in four micro-batches of one per device, against the plain run on eight."""
  workdir = str(tmp_path / "run")
  result = command_server.run_python(
      ["-m", "clip_jax.train", f"--config={tiny_runs.write_tiny_config_file(tmp_path / 'tiny.py')}",
       f"--workdir={workdir}", "--config.accumulation_steps=4"],
      cwd=tmp_path, env={**os.environ, "XLA_FLAGS": xla_flags(4)})
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  with open(os.path.join(workdir, "config.json")) as file:
    assert json.load(file)["accumulation_steps"] == 4
  accumulated = tiny_runs.losses_by_step(workdir)
  reference = tiny_runs.losses_by_step(straight_run[0])
  assert accumulated.keys() == reference.keys()
  for step, loss in reference.items():
    assert abs(accumulated[step] - loss) <= 1e-5 * abs(loss), (step, accumulated[step], loss)


def test_sigmoid_loss_trains_a_model_with_siglip_scale_and_bias(tmp_path):
  config = tiny_runs.tiny_config(**{"loss.name": "sigmoid", "total_steps": 3})
  final = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(final["loss"])
  state, _, _ = tiny_runs.restore_params(str(tmp_path), config, jax.devices())
  # Initialised at log(10) and -10, then moved by three small AdamW steps.
  assert abs(float(state.params["logit_scale"]) - np.log(10.0)) < 0.01
  assert abs(float(state.params["logit_bias"]) + 10.0) < 0.01


def poison_batches(monkeypatch, bad_step):
  """Makes the `bad_step`-th batch of a fresh run (1-based; or each of a tuple of them) contain
  NaN images."""
  bad_steps = {bad_step} if isinstance(bad_step, int) else set(bad_step)
  original = input_pipeline.create_dataset

  class Poisoned:
    def __init__(self, iterator):
      self.iterator, self.count = iterator, 0

    def __next__(self):
      batch = next(self.iterator)
      self.count += 1
      if self.count in bad_steps:
        # Standardised float images (the model takes those too): uint8 cannot hold NaN.
        batch = {**batch, "image": np.full(batch["image"].shape, np.nan, np.float32)}
      return batch

    def __getattr__(self, name):  # the state, the skipped samples: the stream's
      return getattr(self.iterator, name)

  monkeypatch.setattr(train.input_pipeline, "create_dataset",
                      lambda *args, **kwargs: Poisoned(original(*args, **kwargs)))


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  poison_batches(monkeypatch, bad_step=3)
  config = tiny_runs.tiny_config()
  with pytest.raises(train.NonFiniteError, match=r"Step 3: .*last good checkpoint is step 2"):
    train.train_and_evaluate(config, str(tmp_path))
  state, _, step = tiny_runs.restore_params(str(tmp_path), config, jax.devices())
  assert step == 2
  assert all(np.isfinite(value).all() for value in tiny_runs.flat_params(state).values())


def test_nonfinite_loss_skipped_when_configured(tmp_path, monkeypatch):
  poison_batches(monkeypatch, bad_step=3)
  config = tiny_runs.tiny_config(nonfinite="skip")
  train.train_and_evaluate(config, str(tmp_path))
  losses = tiny_runs.losses_by_step(str(tmp_path))
  assert np.isnan(losses[3]) and np.isfinite(losses[tiny_runs.TOTAL_STEPS])
  state, _, _ = tiny_runs.restore_params(str(tmp_path), config, jax.devices())
  assert all(np.isfinite(value).all() for value in tiny_runs.flat_params(state).values())


def test_skipping_stops_after_max_consecutive_skips(tmp_path, monkeypatch):
  poison_batches(monkeypatch, bad_step=(2, 4, 5))
  config = tiny_runs.tiny_config(nonfinite="skip", max_consecutive_skips=2)
  with pytest.raises(train.NonFiniteError, match=r"^Steps 4 to 5: 2 steps in a row .* skipped "
                     r"\(max_consecutive_skips=2\).*The last checkpoint is step 4 in "):
    train.train_and_evaluate(config, str(tmp_path))
  losses = tiny_runs.losses_by_step(str(tmp_path))
  assert np.isnan(losses[2]) and np.isfinite(losses[3]) and np.isnan(losses[4]) and 5 not in losses


@pytest.mark.parametrize("changes, message", [
    ({"model.name": "ViT-Z-99"}, r"model\.name.*ViT-Z-99.*ViT-B-32"),
    ({"global_batch_size": 12}, r"global_batch_size=12.*multiples of 8"),
    ({"data.name": "no-such-data"}, r"data\.name.*no-such-data.*synthetic"),
    ({"loss.name": "triplet"}, r"loss\.name.*triplet.*softmax"),
    ({"nonfinite": "ignore"}, r"nonfinite.*ignore.*stop.*skip"),
    ({"data.image_size": 64}, rf"data\.image_size=64.*allowed: {tiny_runs.IMAGE_SIZE}"),
    ({"accumulation_steps": 4}, r"global_batch_size=16.*accumulation_steps \(4\).*multiples of 32"),
])
def test_bad_config_fails_at_once_naming_the_key(tmp_path, changes, message):
  start = time.perf_counter()
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(tiny_runs.tiny_config(**changes), str(tmp_path))
  assert time.perf_counter() - start < 10  # before any compilation or training


@pytest.mark.parametrize("flag, typo, meant", [
    ("--config.modle.name", "modle", "model"),  # a section
    ("--config.model.overrides.vision.widht", "widht", "width"),  # the last name of the path
])
def test_an_override_of_no_setting_is_a_usage_error_naming_it(tmp_path, flag, typo, meant):
  result = command_server.run_python(
      ["-m", "clip_jax.train", f"--config={config_files.path('synthetic_demo')}",
       f"--workdir={tmp_path}", f"{flag}=3"], cwd=tmp_path)
  assert result.returncode == 1
  assert (f"FATAL Flags parsing error: {flag}: {typo!r} is not a setting. Did you mean "
          f"\"{meant}\" instead of \"{typo}\"?") in result.stderr
  assert "Traceback" not in result.stderr


def test_sigterm_to_the_command_line_program_saves_and_exits_cleanly(tmp_path):
  """The real preemption path: the CLI process gets SIGTERM mid-run. It runs outside the
  repository, with the config file's path: configs work from any directory."""
  workdir = str(tmp_path)
  command = ["-m", "clip_jax.train", f"--config={config_files.path('synthetic_demo')}",
             f"--workdir={workdir}", "--config.total_steps=100000", "--config.log_every_steps=1",
             "--config.global_batch_size=16", "--config.model.overrides.vision.layers=1",
             "--config.model.overrides.text.layers=1"]
  log = str(tmp_path / "output.log")
  process = command_server.start(command, stdout=log, cwd=tmp_path)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 120
  while time.time() < deadline and not (os.path.exists(metrics_path)
                                         and len(open(metrics_path).readlines()) >= 2):
    time.sleep(0.5)
  process.send_signal(signal.SIGTERM)
  process.wait(timeout=120)
  assert process.returncode == train.PREEMPTED_EXIT_STATUS, open(log).read()[-2000:]
  saved = sorted(int(name) for name in os.listdir(os.path.join(workdir, "checkpoints"))
                 if name.isdigit())
  assert saved and saved[-1] >= 2


def test_configured_evaluators_run_at_their_own_steps_into_the_metrics_log(tmp_path, capsys):
  config = tiny_runs.tiny_config(**{"total_steps": 3, "optim.warmup_steps": 1})
  # The zero-shot evaluation's batch size (64 images): the encoders compile once.
  config.evals.shapes = dict(type="retrieval", dataset="synthetic", every_steps=2, num_images=16,
                             batch_size=64)
  workdir = str(tmp_path)
  final = train.train_and_evaluate(config, workdir)
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  steps_with = lambda name: [r["step"] for r in records if name in r]  # noqa: E731
  assert steps_with("shapes/text_to_image_R@5") == [2, 3]  # every 2 steps, and at the end
  assert steps_with("zero_shot/shape_top1_seen") == [3]  # every 1000 steps, and at the end
  assert 0.0 <= final["shapes/image_to_text_R@1"] <= 1.0
  output = capsys.readouterr().out
  assert "step 2 | shapes: image_to_text_R@1 " in output
  assert "step 3 | zero-shot top-1 on new images: shape " in output
  with open(os.path.join(workdir, "config.json")) as file:
    saved = json.load(file)
  assert saved["evals"]["shapes"]["every_steps"] == 2 and saved["total_steps"] == 3


def test_a_bad_evaluator_fails_before_training(tmp_path):
  config = tiny_runs.tiny_config()
  config.evals.imagenet = dict(type="zero_shot_imagenet", dataset="imagenet2012",
                               split="validation", every_steps=10)
  start = time.perf_counter()
  with pytest.raises(ValueError, match=r"evals\.imagenet\.type='zero_shot_imagenet'; allowed: "
                                       r"'zero_shot', 'retrieval', 'linear_probe', "
                                       r"'benchmark'(, '\w+')*\."):
    train.train_and_evaluate(config, str(tmp_path))
  assert time.perf_counter() - start < 10


def save_pretrained(config, directory, seed=1):
  """A converted-checkpoint stand-in: the configured model at another seed, saved as
  `python -m clip_jax.convert` saves."""
  run = settings.parse(config)
  variables = models.init_variables(run.model.architecture, jax.random.PRNGKey(seed))
  pretrained.save(directory, run.model.architecture, variables)
  return pretrained.read(directory)[1]


def flat(tree):
  return {jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("model_name, image_size, lock", [
    ("tiny-vit", tiny_runs.IMAGE_SIZE,
     dict(lock_image=True, image_unlocked_blocks=1, lock_text=True)),
    # A fully locked ResNet runs in inference mode: its BatchNorm statistics stay as well.
    ("tiny-rn", 32, dict(lock_image=True)),
])
def test_finetuning_from_a_converted_checkpoint_moves_only_what_is_unlocked(
    tmp_path, capsys, model_name, image_size, lock):
  config = tiny_runs.tiny_config(**{"total_steps": 3, "model.name": model_name,
                          "data.image_size": image_size})
  if model_name == "tiny-vit":
    config.model.overrides.vision.layers = 2
  else:
    del config.model.overrides["vision"]
  start = save_pretrained(config, str(tmp_path / "converted"))
  config.finetune = dict(checkpoint=str(tmp_path / "converted"), **lock)
  workdir = str(tmp_path / "run")
  assert np.isfinite(train.train_and_evaluate(config, workdir)["loss"])
  assert "Fine-tuning from " in capsys.readouterr().out

  state, _, _ = tiny_runs.restore_params(workdir, config, jax.devices())
  labels = jax.tree.map(bool, flat(finetune.trainable(state.params,
                                                      settings.parse(config).finetune)))
  start_params, end_params = flat(start["params"]), flat(state.params)
  assert set(labels.values()) == {True, False}
  for name, trains in labels.items():
    if trains:  # started from the checkpoint's value (not a fresh init), then moved
      assert not np.array_equal(end_params[name], start_params[name]), name
      assert np.abs(end_params[name] - start_params[name]).max() < 0.1, name
    else:
      np.testing.assert_array_equal(end_params[name], start_params[name], err_msg=name)
  for name, value in flat(start.get("batch_stats", {})).items():
    np.testing.assert_array_equal(flat(state.batch_stats)[name], value, err_msg=name)

  # Loading is not training: the workdir loads after the checkpoint it started from is gone.
  shutil.rmtree(tmp_path / "converted")
  loaded = clip_jax.load(workdir)
  for name, value in flat(loaded.variables).items():
    np.testing.assert_array_equal(value, flat({"params": state.params,
                                               "batch_stats": state.batch_stats})[name])


def test_finetuning_checkpoint_of_another_shape_fails_before_training(tmp_path):
  config = tiny_runs.tiny_config()
  other = tiny_runs.tiny_config(**{"model.overrides.embed_dim": 8})
  save_pretrained(other, str(tmp_path / "converted"))
  config.finetune = dict(checkpoint=str(tmp_path / "converted"))
  with pytest.raises(ValueError, match=r"finetune\.checkpoint=.* holds .*embed_dim=8"):
    train.train_and_evaluate(config, str(tmp_path / "run"))


def count_traced_steps(monkeypatch) -> list[float]:
  """The mask ratio of every train step jax traces: one trace per compilation."""
  traced = []
  original = train.train_step_lib.make_train_step

  def make_counted_step(*args):
    step = original(*args)

    def counted_step(state, batch):
      traced.append(args[-1].mask_ratio)  # the StepOptions
      return step(state, batch)

    return counted_step

  monkeypatch.setattr(train.train_step_lib, "make_train_step", make_counted_step)
  return traced


def flip_config():
  """Steps 1-4 drop half of each image's patches; steps 5 and 6 train on whole images."""
  return tiny_runs.tiny_config(**{"flip.mask_ratio": 0.5, "flip.unmasked_steps": 2})


@pytest.fixture(scope="module")
def flip_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("flip"))
  with pytest.MonkeyPatch.context() as monkeypatch:
    traced = count_traced_steps(monkeypatch)
    final = train.train_and_evaluate(flip_config(), workdir)
  return workdir, final, traced


def test_flip_trains_masked_then_unmasked_with_one_compilation_each(flip_run, straight_run):
  workdir, final, traced = flip_run
  assert traced == [0.5, 0.0]
  losses = tiny_runs.losses_by_step(workdir)
  assert (sorted(losses) == list(range(1, tiny_runs.TOTAL_STEPS + 1))
          and all(np.isfinite(list(losses.values()))))
  # The same initial parameters and first batch as the straight run: only masking tells them apart.
  assert losses[1] != tiny_runs.losses_by_step(straight_run[0])[1]
  assert 0.0 <= final["zero_shot/shape_top1_seen"] <= 1.0


def test_flip_resumes_exactly_with_the_same_masks(flip_run, tmp_path, monkeypatch):
  reference_dir, _, _ = flip_run
  traced = count_traced_steps(monkeypatch)
  run_preempted_then_resumed(flip_config(), str(tmp_path), 3, monkeypatch)
  assert traced == [0.5, 0.5, 0.0]  # steps 1-3; then step 4 masked, 5 and 6 not, after resuming
  assert_same_run(str(tmp_path), reference_dir, flip_config())
