"""The tiny training run the tests share, defined once: the quickstart's config with a tiny model
and a few steps (in Python, and as a config file for the command line), and what the tests read
back of a run (its losses by step, its restored state)."""

import json
import os
import socket

import jax
import ml_collections
import numpy as np

import config_files
from clip_jax import checkpoint
from clip_jax import losses
from clip_jax import models
from clip_jax import program
from clip_jax import settings
from clip_jax import sharding
from clip_jax.models import clip as clip_model

TOTAL_STEPS = 6
IMAGE_SIZE = 24  # The quickstart's.


# The tiny run: the demo's config with a tiny model and these changes.
TINY_MODEL = dict(
    embed_dim=16,
    vision=dict(image_size=IMAGE_SIZE, patch_size=8, width=32, layers=1, head_width=16),
    text=dict(context_length=16, vocab_size=128, width=32, layers=1, head_width=16))
TINY_CHANGES = {
    "total_steps": TOTAL_STEPS, "global_batch_size": 16, "log_every_steps": 1,
    "optim.warmup_steps": 2, "checkpoint.every_steps": 2,
    "evals.zero_shot.every_steps": 1000,  # only at the end
    "evals.zero_shot.num_images": 64,
    "evals.benchmark.num_images": 16,
}
# The same as a config file, for the command line (whose flags cannot add the model's head
# widths, which the demo's config does not set).
TINY_CONFIG_FILE = """import ml_collections
from clip_jax import settings


def get_config():
  config = settings.load_config_file({demo!r})
  config.model.overrides = ml_collections.ConfigDict({model!r})
  config.update_from_flattened_dict({changes!r})
  return config
"""


def tiny_config(**changes) -> ml_collections.ConfigDict:
  config = config_files.load("synthetic_demo")
  config.model.overrides = ml_collections.ConfigDict(TINY_MODEL)
  config.update_from_flattened_dict({**TINY_CHANGES, **changes})
  return config


def write_tiny_config_file(path) -> str:
  path.write_text(TINY_CONFIG_FILE.format(demo=config_files.path("synthetic_demo"),
                                          model=TINY_MODEL, changes=TINY_CHANGES))
  return str(path)


def losses_by_step(workdir):
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["loss"] for r in records if "loss" in r}


def restore_params(workdir, config, devices):
  """Restores the latest checkpoint of `workdir` onto a mesh of `devices`."""
  run = settings.parse(config)
  mesh = sharding.create_mesh(devices=devices)
  model = models.CLIP(run.model.architecture)
  optimizer, _ = program.create_optimizer(run)
  init = program.state_initializer(run, model, optimizer)
  abstract_state = jax.eval_shape(init, jax.random.PRNGKey(0))
  target = checkpoint.abstract_like(abstract_state,
                                    sharding.tree_shardings(abstract_state, mesh, 1))
  manager = checkpoint.create_manager(workdir, run.checkpoint)
  state, data_state, step = checkpoint.restore(manager, target)
  manager.close()
  return state, data_state, step


def flat_params(state):
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)}


def webdataset_config(files):
  config = config_files.load("webdataset", "tiny")
  config.total_steps = 4
  config.optim.warmup_steps = 1
  config.global_batch_size = 8
  config.log_every_steps = 1
  config.checkpoint.every_steps = 2
  config.data.webdataset.files = files
  config.data.image_size = 32
  config.data.shuffle_window = 8
  config.model.overrides.vision = ml_collections.ConfigDict(dict(
      image_size=32, patch_size=8, width=32, layers=1, head_width=16))
  config.model.overrides.text.update(dict(width=32, layers=1, head_width=16))
  config.model.overrides.embed_dim = 16
  return config


def free_port() -> int:
  """A TCP port free on this machine now (for a coordinator)."""
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    return probe.getsockname()[1]


# --- A tiny model and batch for single train steps (tests/test_accumulation.py, test_ema.py) ---

STEP_BATCH = 64  # 8 micro-batches of one example per device on 8 devices
STEP_CONTEXT_LENGTH = 8
STEP_VISION = {
    "tiny-vit": dict(image_size=16, patch_size=4, width=32, layers=1, head_width=16),
    "tiny-rn": dict(image_size=32, width=8, layers=(1, 1), head_width=8),
}


def tiny_step_model(loss_name, name="tiny-vit"):
  """A tiny model with the loss's initial temperature and bias (SigLIP's for the sigmoid loss)."""
  return clip_model.create_model(
      name, embed_dim=16, vision=STEP_VISION[name],
      text=dict(context_length=STEP_CONTEXT_LENGTH, vocab_size=64, width=32, layers=1,
                head_width=16),
      **losses.of(loss_name).model_fields)


def tiny_step_batch(model_name):
  rng = np.random.default_rng(0)
  size = STEP_VISION[model_name]["image_size"]
  return {"image": rng.normal(size=(STEP_BATCH, size, size, 3)).astype(np.float32),
          "text": rng.integers(1, 64, size=(STEP_BATCH, STEP_CONTEXT_LENGTH)).astype(np.int32)}
