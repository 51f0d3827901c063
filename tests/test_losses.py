"""The contrastive losses: against a float64 numpy reference, and sharded over 8 CPU devices
against the single-device computation of the same global batch (values and gradients)."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from clip_jax import losses

GLOBAL_BATCH = 64
WIDTH = 32
MESH_SHAPES = [(8, 1), (4, 2), (2, 4), (1, 8)]
LOGIT_SCALES = [0.0, math.log(100.0)]  # OpenAI's initial 1/0.07 lies between; 100 is its clamp.
LOGIT_BIAS = -10.0  # SigLIP's initial bias.


def paired_features(seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Unit-norm [N, D] image and text features, each text correlated with its own image."""
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(GLOBAL_BATCH, WIDTH))
  texts = images + 2.0 * rng.normal(size=(GLOBAL_BATCH, WIDTH))
  normalise = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
  return normalise(images), normalise(texts)


def create_mesh(shape):
  return jax.make_mesh(shape, ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def reference_softmax_loss(images, texts, logit_scale):
  logits = math.exp(logit_scale) * images.astype(np.float64) @ texts.astype(np.float64).T

  def cross_entropy(rows):  # the target of row i is column i
    log_normaliser = np.log(np.sum(np.exp(rows - rows.max(1, keepdims=True)), 1)) + rows.max(1)
    return np.mean(log_normaliser - np.diag(rows))

  return (cross_entropy(logits) + cross_entropy(logits.T)) / 2


def reference_sigmoid_loss(images, texts, logit_scale, logit_bias):
  logits = math.exp(logit_scale) * images.astype(np.float64) @ texts.astype(np.float64).T
  logits += logit_bias
  labels = 2 * np.eye(len(images)) - 1
  return np.sum(np.logaddexp(0.0, -labels * logits)) / len(images)  # -log sigmoid(x) = log(1+e^-x)


def assert_relatively_close(actual, expected, tolerance=1e-5, name=""):
  """||actual - expected|| <= tolerance * ||expected|| (exact equality for an all-zero expected)."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  error = np.linalg.norm(actual - expected)
  assert error <= tolerance * np.linalg.norm(expected), (
      f"{name}: relative error {error / np.linalg.norm(expected):.2e}")


@pytest.mark.parametrize("logit_scale", LOGIT_SCALES)
def test_softmax_loss_matches_numpy_reference(logit_scale):
  images, texts = paired_features(seed=0)
  loss = losses.softmax_contrastive_loss(images, texts, jnp.float32(logit_scale))
  assert_relatively_close(loss, reference_softmax_loss(images, texts, logit_scale))


@pytest.mark.parametrize("logit_scale", LOGIT_SCALES)
def test_sigmoid_loss_matches_numpy_reference(logit_scale):
  images, texts = paired_features(seed=1)
  loss = losses.sigmoid_contrastive_loss(images, texts, jnp.float32(logit_scale),
                                         jnp.float32(LOGIT_BIAS))
  assert_relatively_close(loss, reference_sigmoid_loss(images, texts, logit_scale, LOGIT_BIAS))


def sharded_arguments(mesh, images, texts, logit_scale, logit_bias):
  """Global arrays as the train step has them: batch split over both axes, scalars replicated."""
  batch = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
  replicated = NamedSharding(mesh, PartitionSpec())
  return (jax.device_put(images, batch), jax.device_put(texts, batch),
          jax.device_put(jnp.float32(logit_scale), replicated),
          jax.device_put(jnp.float32(logit_bias), replicated))


def loss_and_gradients(loss_fn):
  return jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2, 3)))


@pytest.mark.parametrize("loss_name", ["softmax", "sigmoid"])
@pytest.mark.parametrize("mesh_shape", MESH_SHAPES)
@pytest.mark.parametrize("logit_scale", LOGIT_SCALES)
def test_sharded_loss_and_gradients_match_single_device(loss_name, mesh_shape, logit_scale):
  images, texts = paired_features(seed=2)
  single_device = loss_and_gradients(losses.make_loss_fn(loss_name))
  expected_loss, expected_gradients = single_device(
      images, texts, jnp.float32(logit_scale), jnp.float32(LOGIT_BIAS))

  mesh = create_mesh(mesh_shape)
  sharded = loss_and_gradients(losses.make_loss_fn(loss_name, mesh))
  loss, gradients = sharded(*sharded_arguments(mesh, images, texts, logit_scale, LOGIT_BIAS))

  assert_relatively_close(loss, expected_loss, name="loss")
  for name, gradient, expected in zip(["image_features", "text_features", "logit_scale",
                                       "logit_bias"], gradients, expected_gradients):
    assert gradient.shape == expected.shape, name
    assert_relatively_close(gradient, expected, name=f"d loss / d {name}")


@pytest.mark.parametrize("loss_name", ["softmax", "sigmoid"])
def test_no_device_holds_the_global_similarity_matrix(loss_name):
  """In the partitioned forward and backward pass the largest logits block is [b, N], not [N, N]."""
  mesh = create_mesh((4, 2))
  local_batch = GLOBAL_BATCH // mesh.size
  images, texts = paired_features(seed=3)
  compiled = loss_and_gradients(losses.make_loss_fn(loss_name, mesh)).lower(
      *sharded_arguments(mesh, images, texts, 1.0, LOGIT_BIAS)).compile()
  hlo = compiled.as_text()
  assert f"f32[{local_batch},{GLOBAL_BATCH}]" in hlo
  assert not re.search(rf"\[{GLOBAL_BATCH},{GLOBAL_BATCH}\]", hlo)


def test_softmax_loss_takes_no_bias():
  """Models without a logit bias hand the loss None; the softmax loss does not need one."""
  mesh = create_mesh((8, 1))
  images, texts, logit_scale, logit_bias = sharded_arguments(
      mesh, *paired_features(seed=4), 1.0, LOGIT_BIAS)
  loss_fn = losses.make_loss_fn("softmax", mesh)
  assert_relatively_close(loss_fn(images, texts, logit_scale, None),
                          loss_fn(images, texts, logit_scale, logit_bias))
