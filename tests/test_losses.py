"""The contrastive losses: against a float64 numpy reference, and sharded over 8 CPU devices
against the single-device computation of the same global batch (values and gradients)."""

import math
import re

import jax.numpy as jnp
import pytest

import references
from clip_jax import losses

MESH_SHAPES = [(8, 1), (4, 2), (2, 4), (1, 8)]
LOGIT_SCALES = [0.0, math.log(100.0)]  # OpenAI's initial 1/0.07 lies between; 100 is its clamp.
LOGIT_BIAS = -10.0  # SigLIP's initial bias.


@pytest.mark.parametrize("logit_scale", LOGIT_SCALES)
def test_softmax_loss_matches_numpy_reference(logit_scale):
  images, texts = references.paired_features(seed=0)
  loss = losses.softmax_contrastive_loss(images, texts, jnp.float32(logit_scale))
  references.assert_relatively_close(
      loss, references.reference_softmax_loss(images, texts, logit_scale))


@pytest.mark.parametrize("logit_scale", LOGIT_SCALES)
def test_sigmoid_loss_matches_numpy_reference(logit_scale):
  images, texts = references.paired_features(seed=1)
  loss = losses.sigmoid_contrastive_loss(images, texts, jnp.float32(logit_scale),
                                         jnp.float32(LOGIT_BIAS))
  references.assert_relatively_close(
      loss, references.reference_sigmoid_loss(images, texts, logit_scale, LOGIT_BIAS))


@pytest.mark.parametrize("loss_name", ["softmax", "sigmoid"])
@pytest.mark.parametrize("mesh_shape", MESH_SHAPES)
@pytest.mark.parametrize("logit_scale", LOGIT_SCALES)
def test_sharded_loss_and_gradients_match_single_device(loss_name, mesh_shape, logit_scale):
  images, texts = references.paired_features(seed=2)
  single_device = references.loss_and_gradients(losses.make_loss_fn(loss_name))
  expected_loss, expected_gradients = single_device(
      images, texts, jnp.float32(logit_scale), jnp.float32(LOGIT_BIAS))

  mesh = references.create_mesh(mesh_shape)
  sharded = references.loss_and_gradients(losses.make_loss_fn(loss_name, mesh))
  loss, gradients = sharded(*references.sharded_arguments(mesh, images, texts, logit_scale,
                                                          LOGIT_BIAS))

  references.assert_relatively_close(loss, expected_loss, name="loss")
  for name, gradient, expected in zip(["image_features", "text_features", "logit_scale",
                                       "logit_bias"], gradients, expected_gradients):
    assert gradient.shape == expected.shape, name
    references.assert_relatively_close(gradient, expected, name=f"d loss / d {name}")


@pytest.mark.parametrize("loss_name", ["softmax", "sigmoid"])
def test_no_device_holds_the_global_similarity_matrix(loss_name):
  """In the partitioned forward and backward pass the largest logits block is [b, N], not [N, N]."""
  mesh = references.create_mesh((4, 2))
  local_batch = references.LOSS_BATCH // mesh.size
  images, texts = references.paired_features(seed=3)
  compiled = references.loss_and_gradients(losses.make_loss_fn(loss_name, mesh)).lower(
      *references.sharded_arguments(mesh, images, texts, 1.0, LOGIT_BIAS)).compile()
  hlo = compiled.as_text()
  assert f"f32[{local_batch},{references.LOSS_BATCH}]" in hlo
  assert not re.search(rf"\[{references.LOSS_BATCH},{references.LOSS_BATCH}\]", hlo)


def test_softmax_loss_takes_no_bias():
  """Models without a logit bias hand the loss None; the softmax loss does not need one."""
  mesh = references.create_mesh((8, 1))
  images, texts, logit_scale, logit_bias = references.sharded_arguments(
      mesh, *references.paired_features(seed=4), 1.0, LOGIT_BIAS)
  loss_fn = losses.make_loss_fn("softmax", mesh)
  references.assert_relatively_close(loss_fn(images, texts, logit_scale, None),
                          loss_fn(images, texts, logit_scale, logit_bias))
