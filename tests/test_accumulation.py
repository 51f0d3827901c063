"""Exact gradient accumulation (`accumulation_steps`, GradCache's scheme): a step in micro-batches
gives the loss and gradients of the whole-batch step, for both losses in plain and blockwise form,
on one device and on eight over both mesh axes.

The reference is the same step with accumulation_steps=1. With plain SGD at a learning rate of 1
the update is minus the gradient, so the parameters before and after a step give the gradients."""

import functools

import jax
import numpy as np
import optax
import pytest

from clip_jax import losses
from clip_jax import sharding
from clip_jax import settings
from clip_jax import train_step as train_step_lib
from clip_jax.models import clip as clip_model

GLOBAL_BATCH = 64  # 8 micro-batches of one example per device on 8 devices
IMAGE_SIZE, CONTEXT_LENGTH = 16, 8
TOLERANCE = 1e-5  # relative, float32


def tiny_model(loss_name):
  """A tiny ViT with the loss's initial temperature and bias (SigLIP's for the sigmoid loss)."""
  return clip_model.create_model(
      "tiny-vit", embed_dim=16,
      vision=dict(image_size=IMAGE_SIZE, patch_size=4, width=32, layers=1, head_width=16),
      text=dict(context_length=CONTEXT_LENGTH, vocab_size=64, width=32, layers=1, head_width=16),
      **settings.LOSS_MODEL_FIELDS[loss_name])


def random_batch(seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.normal(size=(GLOBAL_BATCH, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32),
          "text": rng.integers(1, 64, size=(GLOBAL_BATCH, CONTEXT_LENGTH)).astype(np.int32)}


def relative_error(ours, reference):
  return float(np.max(np.abs(ours - reference)) / max(np.max(np.abs(reference)), 1e-30))


@functools.cache
def one_step(accumulation_steps, loss_name, blockwise, mesh_shape):
  """(loss, gradients) of a step in `accumulation_steps` micro-batches on a mesh of
  `mesh_shape` = (data, fsdp) devices: the gradients as SGD at a learning rate of 1 applied them."""
  mesh = sharding.create_mesh(settings.Mesh(data=mesh_shape[0], fsdp=mesh_shape[1],
                                            min_shard_size=1),
                              devices=jax.devices()[:mesh_shape[0] * mesh_shape[1]])
  model = tiny_model(loss_name)
  loss_fn = losses.make_loss_fn(loss_name, mesh, blockwise=blockwise, tile_size=4)
  optimizer = optax.sgd(1.0)
  state = train_step_lib.create_train_state(
      jax.random.PRNGKey(0), model=model, optimizer=optimizer,
      image_shape=(GLOBAL_BATCH, IMAGE_SIZE, IMAGE_SIZE, 3),
      text_shape=(GLOBAL_BATCH, CONTEXT_LENGTH))
  state_shardings = sharding.tree_shardings(state, mesh, min_shard_size=1)
  step = jax.jit(train_step_lib.make_train_step(
      model, optimizer, loss_fn, optax.constant_schedule(1.0),
      accumulation_steps=accumulation_steps, batch_shards=sharding.batch_shard_count(mesh)),
      in_shardings=(state_shardings, sharding.batch_sharding(mesh)))
  new_state, metrics = step(jax.device_put(state, state_shardings),
                            jax.device_put(random_batch(), sharding.batch_sharding(mesh)))
  assert bool(metrics["finite"])
  gradients = jax.tree.map(lambda old, new: np.asarray(old) - np.asarray(new), state.params,
                           new_state.params)
  return float(metrics["loss"]), gradients


def assert_same_step(ours, reference):
  (loss, gradients), (reference_loss, reference_gradients) = ours, reference
  assert abs(loss - reference_loss) <= TOLERANCE * abs(reference_loss)
  assert jax.tree.structure(gradients) == jax.tree.structure(reference_gradients)
  for (path, value), expected in zip(jax.tree_util.tree_leaves_with_path(gradients),
                                     jax.tree.leaves(reference_gradients)):
    assert relative_error(value, expected) < TOLERANCE, jax.tree_util.keystr(path)


# Between them: both losses in both forms, 2, 4 and 8 micro-batches, one device, and eight over
# the data axis alone and over both axes (FSDP: the parameters split, gathered in each pass).
@pytest.mark.parametrize("loss_name, blockwise, mesh_shape, accumulation_steps", [
    ("softmax", False, (1, 1), 2),
    ("softmax", True, (2, 4), 4),
    ("sigmoid", False, (8, 1), 8),
    ("sigmoid", True, (2, 4), 2),
])
def test_micro_batches_give_the_whole_batch_step(loss_name, blockwise, mesh_shape,
                                                 accumulation_steps):
  assert_same_step(one_step(accumulation_steps, loss_name, blockwise, mesh_shape),
                   one_step(1, loss_name, blockwise, mesh_shape))


def test_micro_batches_keep_each_devices_rows_and_merge_back_in_order():
  rows = np.arange(32)
  split = np.asarray(train_step_lib.split_micro_batches(rows, steps=4, shards=2))
  # Shard 0 holds rows 0-15 and shard 1 rows 16-31: micro-batch k takes rows 4k..4k+3 of each.
  np.testing.assert_array_equal(split[1], [4, 5, 6, 7, 20, 21, 22, 23])
  np.testing.assert_array_equal(train_step_lib.merge_micro_batches(split, shards=2), rows)
