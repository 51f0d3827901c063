"""Exact gradient accumulation (`accumulation_steps`, GradCache's scheme): a step in micro-batches
gives the loss and gradients of the whole-batch step, for both losses in plain and blockwise form,
with FLIP's masks and without, on one device and on eight over both mesh axes; a ModifiedResNet's
step, whose BatchNorm normalises each micro-batch by itself, gives those of the loss of its
micro-batches' features, computed one micro-batch after another.

The reference is the same step with accumulation_steps=1. With plain SGD at a learning rate of 1
the update is minus the gradient, so the parameters before and after a step give the gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tiny_runs
from clip_jax import losses
from clip_jax import sharding
from clip_jax import settings
from clip_jax import train_step as train_step_lib

TOLERANCE = 1e-5  # relative, float32


def relative_error(ours, reference, floor=1e-30):
  return float(np.max(np.abs(ours - reference)) / max(np.max(np.abs(reference)), floor))


def create_mesh(mesh_shape):
  """A mesh of `mesh_shape` = (data, fsdp) devices, each parameter split."""
  return sharding.create_mesh(settings.Mesh(data=mesh_shape[0], fsdp=mesh_shape[1],
                                            min_shard_size=1),
                              devices=jax.devices()[:mesh_shape[0] * mesh_shape[1]])


@functools.cache
def initial_state(loss_name, model_name):
  """The state before the step, initialised compiled (op by op, a ResNet's takes half a minute)."""
  size = tiny_runs.STEP_VISION[model_name]["image_size"]
  return jax.jit(functools.partial(
      train_step_lib.create_train_state, model=tiny_runs.tiny_step_model(loss_name, model_name),
      optimizer=optax.sgd(1.0), image_shape=(tiny_runs.STEP_BATCH, size, size, 3),
      text_shape=(tiny_runs.STEP_BATCH, tiny_runs.STEP_CONTEXT_LENGTH)))(jax.random.PRNGKey(0))


def run_step(batch, accumulation_steps, loss_name, blockwise, mesh_shape, mask_ratio=0.0,
             model_name="tiny-vit"):
  """(state before, state after, metrics) of a step on `batch` in `accumulation_steps`
  micro-batches on a mesh of `mesh_shape` devices, FLIP dropping `mask_ratio` of the patches,
  with plain SGD at a learning rate of 1."""
  mesh = create_mesh(mesh_shape)
  model = tiny_runs.tiny_step_model(loss_name, model_name)
  loss = losses.make_loss(loss_name, mesh, blockwise=blockwise, tile_size=4)
  optimizer = optax.sgd(1.0)
  state = initial_state(loss_name, model_name)
  state_shardings = sharding.tree_shardings(state, mesh, min_shard_size=1)
  step = jax.jit(train_step_lib.make_train_step(
      model, optimizer, loss, optax.constant_schedule(1.0), train_step_lib.StepOptions(
          mask_ratio=mask_ratio, accumulation_steps=accumulation_steps,
          batch_shards=sharding.batch_shard_count(mesh))),
      in_shardings=(state_shardings, sharding.batch_sharding(mesh)))
  new_state, metrics = step(jax.device_put(state, state_shardings),
                            jax.device_put(batch, sharding.batch_sharding(mesh)))
  return state, new_state, metrics


@functools.cache
def one_step(accumulation_steps, loss_name, blockwise, mesh_shape, mask_ratio=0.0,
             model_name="tiny-vit"):
  """(loss, gradients, BatchNorm statistics) of `run_step` on the random batch: the gradients as
  SGD applied them."""
  state, new_state, metrics = run_step(tiny_runs.tiny_step_batch(model_name), accumulation_steps,
                                       loss_name, blockwise, mesh_shape, mask_ratio, model_name)
  assert bool(metrics["finite"])
  gradients = jax.tree.map(lambda old, new: np.asarray(old) - np.asarray(new), state.params,
                           new_state.params)
  return float(metrics["loss"]), gradients, jax.tree.map(np.asarray, new_state.batch_stats)


def assert_same_trees(trees, reference_trees):
  """Leaf by leaf, relative to the leaf's largest entry, or to 1% of the tree's largest if that
  is more: the few leaves whose gradients are a thousand times smaller than the rest (a ResNet's
  attention pool's query and key projections; the key bias's is zero but for rounding, as
  softmax ignores a constant per key) would otherwise compare rounding noise with itself."""
  assert jax.tree.structure(trees) == jax.tree.structure(reference_trees)
  floor = 0.01 * max((float(np.max(np.abs(leaf))) for leaf in jax.tree.leaves(reference_trees)),
                     default=1e-28)
  for (path, value), expected in zip(jax.tree_util.tree_leaves_with_path(trees),
                                     jax.tree.leaves(reference_trees)):
    assert relative_error(value, expected, floor) < TOLERANCE, jax.tree_util.keystr(path)


def assert_same_step(ours, reference):
  (loss, gradients, batch_stats), (reference_loss, reference_gradients, reference_stats) = (
      ours, reference)
  assert abs(loss - reference_loss) <= TOLERANCE * abs(reference_loss)
  assert_same_trees(gradients, reference_gradients)
  assert_same_trees(batch_stats, reference_stats)


# Between them: both losses in both forms, with FLIP's masks and without, 2, 4 and 8
# micro-batches, one device, and eight over the data axis alone and over both axes (FSDP: the
# parameters split, gathered in each pass).
@pytest.mark.parametrize("loss_name, blockwise, mesh_shape, accumulation_steps, mask_ratio", [
    ("softmax", False, (1, 1), 2, 0.0),
    ("softmax", True, (2, 4), 4, 0.5),
    ("sigmoid", False, (8, 1), 8, 0.5),
    ("sigmoid", True, (2, 4), 2, 0.0),
])
def test_micro_batches_give_the_whole_batch_step(loss_name, blockwise, mesh_shape,
                                                 accumulation_steps, mask_ratio):
  assert_same_step(one_step(accumulation_steps, loss_name, blockwise, mesh_shape, mask_ratio),
                   one_step(1, loss_name, blockwise, mesh_shape, mask_ratio))


def test_the_flip_cases_drop_patches():
  """The FLIP cases above compare masked steps (the same masks with and without micro-batches,
  or the steps would differ); here, that masking happens at all."""
  unmasked = one_step(1, "softmax", True, (2, 4))
  assert abs(one_step(1, "softmax", True, (2, 4), 0.5)[0] - unmasked[0]) > 1e-3


def sequential_resnet_step(accumulation_steps, mesh_shape):
  """The reference for a ModifiedResNet: each micro-batch through the model in train mode, one
  after another in Python on one device, the loss of all their features, its gradient, and the
  mean of the BatchNorm statistics the micro-batches leave."""
  model = tiny_runs.tiny_step_model("softmax", "tiny-rn")
  state = initial_state("softmax", "tiny-rn")
  loss_fn = losses.make_loss_fn("softmax", create_mesh((1, 1)), blockwise=False)
  micro_batches = train_step_lib.split_micro_batches(
      tiny_runs.tiny_step_batch("tiny-rn"), accumulation_steps, mesh_shape[0] * mesh_shape[1])

  def loss_and_statistics(params):
    features, statistics = [], []
    for index in range(accumulation_steps):
      outputs, updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, micro_batches["image"][index],
          micro_batches["text"][index], train=True, mutable=["batch_stats"])
      features.append((outputs["image_features"], outputs["text_features"]))
      statistics.append(updates["batch_stats"])
    image, text = train_step_lib.merge_micro_batches(
        jax.tree.map(lambda *parts: jnp.stack(parts), *features), mesh_shape[0] * mesh_shape[1])
    mean_statistics = jax.tree.map(lambda *parts: sum(parts) / len(parts), *statistics)
    return loss_fn(image, text, params["logit_scale"], None), mean_statistics

  (loss, statistics), gradients = jax.jit(jax.value_and_grad(loss_and_statistics, has_aux=True))(
      state.params)
  # The temperature's update as the step applies it: clipped to OpenAI's range.
  logit_scale = state.params["logit_scale"]
  gradients["logit_scale"] = logit_scale - jnp.clip(logit_scale - gradients["logit_scale"], 0.0,
                                                    train_step_lib.MAX_LOGIT_SCALE)
  return float(loss), jax.tree.map(np.asarray, gradients), jax.tree.map(np.asarray, statistics)


def test_a_resnet_normalises_each_micro_batch_by_itself():
  """On two devices by FSDP: each micro-batch's statistics are over both devices' rows."""
  mesh_shape, accumulation_steps = (1, 2), 2
  assert_same_step(one_step(accumulation_steps, "softmax", False, mesh_shape, model_name="tiny-rn"),
                   sequential_resnet_step(accumulation_steps, mesh_shape))


def test_a_non_finite_micro_batch_leaves_the_state_as_it_was():
  """One image of the last micro-batch is NaN: the step reports it and applies nothing."""
  batch = tiny_runs.tiny_step_batch("tiny-vit")
  batch["image"][-1] = np.nan
  state, new_state, metrics = run_step(batch, 2, "softmax", False, (1, 1))
  assert not bool(metrics["finite"]) and int(new_state.step) == int(state.step) + 1
  for old, new in zip(jax.tree.leaves(state.params), jax.tree.leaves(new_state.params)):
    np.testing.assert_array_equal(new, old)


def test_micro_batches_keep_each_devices_rows_and_merge_back_in_order():
  rows = np.arange(32)
  split = np.asarray(train_step_lib.split_micro_batches(rows, steps=4, shards=2))
  # Shard 0 holds rows 0-15 and shard 1 rows 16-31: micro-batch k takes rows 4k..4k+3 of each.
  np.testing.assert_array_equal(split[1], [4, 5, 6, 7, 20, 21, 22, 23])
  np.testing.assert_array_equal(train_step_lib.merge_micro_batches(split, shards=2), rows)
