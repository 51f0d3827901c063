"""ModifiedResNet: BatchNorm is global under a sharded batch; train and eval modes differ."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

BATCH = 16


def train_forward(model, variables, images):
  """Train-mode image features and the updated BatchNorm statistics."""
  return model.apply(variables, images, train=True, mutable=["batch_stats"],
                     method=model.encode_image)


def test_batch_norm_statistics_are_global_under_a_sharded_batch(tiny_rn):
  model, variables, _, _ = tiny_rn
  size = model.config.vision.image_size
  # Every device's shard has its own offset, so per-shard statistics would differ a lot.
  offsets = jnp.repeat(jnp.arange(8.0), BATCH // 8)[:, None, None, None]
  images = jax.random.normal(jax.random.PRNGKey(1), (BATCH, size, size, 3)) + offsets
  forward = jax.jit(functools.partial(train_forward, model))
  expected_features, expected_updates = forward(variables, images)

  mesh = jax.make_mesh((8,), ("data",))
  sharded_images = jax.device_put(images, NamedSharding(mesh, PartitionSpec("data")))
  replicated = jax.device_put(variables, NamedSharding(mesh, PartitionSpec()))
  features, updates = forward(replicated, sharded_images)
  assert len(features.sharding.device_set) == 8
  np.testing.assert_allclose(features, expected_features, rtol=1e-4, atol=1e-5)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5),
               updates, expected_updates)

  first_shard_alone, _ = forward(variables, images[:BATCH // 8])
  assert not np.allclose(first_shard_alone, expected_features[:BATCH // 8], atol=1e-3)


def test_train_mode_updates_running_statistics_and_eval_mode_uses_them(tiny_rn):
  model, variables, images, _ = tiny_rn
  train_features, updates = jax.jit(functools.partial(train_forward, model))(variables, images)
  stem = updates["batch_stats"]["visual"]["bn1"]
  initial = variables["batch_stats"]["visual"]["bn1"]
  np.testing.assert_array_equal(initial["mean"], 0.0)
  np.testing.assert_array_equal(initial["var"], 1.0)
  assert not np.allclose(stem["mean"], 0.0)  # Moved 10% of the way to the batch mean.

  encode_image = jax.jit(functools.partial(model.apply, method=model.encode_image))
  eval_features = encode_image(variables, images)
  assert not np.allclose(eval_features, train_features, atol=1e-3)
  # Inference does not depend on the rest of the batch.
  np.testing.assert_allclose(encode_image(variables, images[:1]), eval_features[:1], atol=1e-5)
