"""The blockwise (tile by tile, ring of devices) losses against the plain ones and float64 numpy:
values and gradients, on random and adversarial inputs, on one device and on 8; that no logits
block larger than a tile is ever formed; and a training run that selects them in the config."""

import json
import math
import os
import re

import jax.numpy as jnp
import numpy as np
import pytest

from clip_jax import blockwise_losses
from clip_jax import losses
from clip_jax import train
import references
import tiny_runs

GLOBAL_BATCH = 128
WIDTH = 16
LOGIT_BIAS = -10.0
MAX_LOGIT_SCALE = math.log(100.0)  # OpenAI's clamp: the sharpest softmax training can see


def unit_rows(array):
  return (array / np.linalg.norm(array, axis=-1, keepdims=True)).astype(np.float32)


def random_features(seed):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(GLOBAL_BATCH, WIDTH))
  return unit_rows(images), unit_rows(images + 2.0 * rng.normal(size=images.shape))


def near_duplicate_features(seed):
  """Every embedding within ~1e-3 of one direction: all logits almost equal, the softmaxes flat
  and their gradients small differences of large terms."""
  rng = np.random.default_rng(seed)
  direction = rng.normal(size=(1, WIDTH))
  return (unit_rows(direction + 1e-3 * rng.normal(size=(GLOBAL_BATCH, WIDTH))),
          unit_rows(direction + 1e-3 * rng.normal(size=(GLOBAL_BATCH, WIDTH))))


def peaked_features(seed):
  """Texts equal to their images, so that at the largest temperature every softmax is one-hot
  to within e^-100: log-sum-exps of numbers far apart."""
  images = random_features(seed)[0]
  return images, images.copy()


INPUTS = {"random": random_features, "near_duplicates": near_duplicate_features,
          "peaked": peaked_features}


def reference_gradients(loss_name, images, texts, logit_scale, logit_bias):
  """d loss / d (images, texts, logit_scale, logit_bias) in float64, by hand, and the same sums
  over the terms' absolute values: the scale of the rounding error any float32 summation makes.

  Relative to the gradient itself that error is unbounded where the terms cancel (near-duplicate
  embeddings: the plain loss is itself 1e-4 to 0.3 off float64 there; a one-hot softmax at
  temperature 1/100: the true gradient underflows), so the gradients are compared relative to
  the terms' magnitude.
  """
  images, texts = images.astype(np.float64), texts.astype(np.float64)
  scale = math.exp(logit_scale)
  logits = scale * images @ texts.T
  count = len(images)
  if loss_name == "softmax":
    def softmax(rows):
      exponentials = np.exp(rows - rows.max(1, keepdims=True))
      return exponentials / exponentials.sum(1, keepdims=True)
    weights = (softmax(logits) + softmax(logits.T).T - 2 * np.eye(count)) / (2 * count)
    magnitudes = (softmax(logits) + softmax(logits.T).T + 2 * np.eye(count)) / (2 * count)
  else:
    labels = 2 * np.eye(count) - 1
    weights = -labels / (1 + np.exp(labels * (logits + logit_bias))) / count  # -y sigmoid(-y l)
    magnitudes = np.abs(weights)
  gradients = (scale * weights @ texts, scale * weights.T @ images, np.sum(weights * logits),
               np.sum(weights) if loss_name == "sigmoid" else 0.0)
  term_sizes = (scale * magnitudes @ np.abs(texts), scale * magnitudes.T @ np.abs(images),
                np.sum(magnitudes * np.abs(logits)), np.sum(magnitudes))
  return gradients, term_sizes


def assert_close_to_term_size(actual, expected, term_size, tolerance=1e-5, name=""):
  error = np.linalg.norm(np.asarray(actual, np.float64) - np.asarray(expected, np.float64))
  assert error <= tolerance * np.linalg.norm(term_size), (
      f"{name}: error {error / np.linalg.norm(term_size):.2e} of the terms' size")


def reference_loss(loss_name, images, texts, logit_scale, logit_bias):
  """The float64 loss and the size of the terms it sums (as for the gradients: a one-hot
  softmax's loss of 1e-12 is a difference of logits near 100, which float32 holds to 1e-5)."""
  if loss_name == "sigmoid":  # a sum of positive terms: its own size
    value = references.reference_sigmoid_loss(images, texts, logit_scale, logit_bias)
    return value, value
  logits = math.exp(logit_scale) * images.astype(np.float64) @ texts.astype(np.float64).T
  log_sum_exps = [np.log(np.sum(np.exp(rows - rows.max(1, keepdims=True)), 1)) + rows.max(1)
                  for rows in (logits, logits.T)]
  term_size = np.mean(np.abs(log_sum_exps[0]) + np.abs(log_sum_exps[1])
                      + 2 * np.abs(np.diag(logits))) / 2
  return references.reference_softmax_loss(images, texts, logit_scale), term_size


def value_and_gradients(loss_fn, mesh, images, texts, logit_scale):
  arguments = (references.sharded_arguments(mesh, images, texts, logit_scale, LOGIT_BIAS)
               if mesh else (images, texts, jnp.float32(logit_scale), jnp.float32(LOGIT_BIAS)))
  return references.loss_and_gradients(loss_fn)(*arguments)


LAYOUTS = [
    (None, 16),     # one device, 8 x 8 tiles
    (None, 48),     # a size that does not divide the batch: 32-wide tiles
    ((8, 1), 4),    # the ring over 8 devices, 4 tiles of 4 per block pair
    ((2, 4), 16),   # over both mesh axes, one tile per block pair
]
# Every layout on random inputs; the adversarial ones on one device and on the 8-device ring.
CASES = ([("random", *layout) for layout in LAYOUTS]
         + [(inputs, *layout) for inputs in ("near_duplicates", "peaked")
            for layout in (LAYOUTS[0], LAYOUTS[2])])


@pytest.mark.parametrize("loss_name", ["softmax", "sigmoid"])
@pytest.mark.parametrize("logit_scale", [0.0, MAX_LOGIT_SCALE])
@pytest.mark.parametrize("inputs, mesh_shape, tile_size", CASES)
def test_blockwise_equals_plain_and_float64(loss_name, inputs, logit_scale, mesh_shape,
                                            tile_size):
  images, texts = INPUTS[inputs](seed=0)
  plain_loss, plain_gradients = value_and_gradients(losses.make_loss_fn(loss_name), None, images,
                                                    texts, logit_scale)
  mesh = references.create_mesh(mesh_shape) if mesh_shape else None
  loss_fn = losses.make_loss_fn(loss_name, mesh, blockwise=True, tile_size=tile_size)
  loss, gradients = value_and_gradients(loss_fn, mesh, images, texts, logit_scale)

  names = ["image_features", "text_features", "logit_scale", "logit_bias"]
  reference, term_size = reference_loss(loss_name, images, texts, logit_scale, LOGIT_BIAS)
  if inputs == "random":
    references.assert_relatively_close(loss, plain_loss, name="loss vs plain")
  assert_close_to_term_size(loss, plain_loss, term_size, name="loss vs plain")
  assert_close_to_term_size(loss, reference, term_size, name="loss vs float64")
  expected, term_sizes = reference_gradients(loss_name, images, texts, logit_scale, LOGIT_BIAS)
  for name, gradient, plain, reference, term_size in zip(names, gradients, plain_gradients,
                                                         expected, term_sizes):
    if loss_name == "softmax" and name == "logit_bias":
      assert float(gradient) == 0.0  # the softmax loss has no bias
      continue
    if inputs == "random":  # well conditioned: the plain loss's own gradient, to 1e-5 of it
      references.assert_relatively_close(gradient, plain, name=f"d loss / d {name} vs plain")
    assert_close_to_term_size(gradient, plain, term_size, name=f"d loss / d {name} vs plain")
    assert_close_to_term_size(gradient, reference, term_size,
                              name=f"d loss / d {name} vs float64")


def float32_shapes(hlo_text):
  return [tuple(int(size) for size in dims.split(",") if size)
          for dims in re.findall(r"f32\[([\d,]*)\]", hlo_text)]


@pytest.mark.parametrize("loss_name", ["softmax", "sigmoid"])
def test_no_logits_block_larger_than_a_tile(loss_name):
  """On 8 devices with b = 16 local pairs, width 8 and 4 x 4 tiles, no float32 array in the
  compiled forward and backward pass is larger than the local features [16, 8]: no [b, b], [b, N]
  or [N, N] block of logits, and the features are never gathered ([N, 8])."""
  mesh = references.create_mesh((8, 1))
  local_batch, width, tile = GLOBAL_BATCH // 8, 8, 4
  rng = np.random.default_rng(0)
  images, texts = (unit_rows(rng.normal(size=(GLOBAL_BATCH, width))) for _ in range(2))
  loss_fn = losses.make_loss_fn(loss_name, mesh, blockwise=True, tile_size=tile)
  hlo = references.loss_and_gradients(loss_fn).lower(
      *references.sharded_arguments(mesh, images, texts, 1.0, LOGIT_BIAS)).compile().as_text()
  shapes = float32_shapes(hlo)
  assert (tile, tile) in shapes  # the tiles are there
  largest = max(shapes, key=math.prod)
  assert math.prod(largest) <= local_batch * width, largest
  # The plain loss, compiled the same way, does hold the [b, N] block this test looks for.
  plain_hlo = references.loss_and_gradients(losses.make_loss_fn(loss_name, mesh)).lower(
      *references.sharded_arguments(mesh, images, texts, 1.0, LOGIT_BIAS)).compile().as_text()
  assert (local_batch, GLOBAL_BATCH) in float32_shapes(plain_hlo)


@pytest.mark.parametrize("local_batch, tile_size, expected", [
    (256, 1024, 256), (1024, 1024, 1024), (96, 64, 48), (7, 4, 1)])
def test_tile_size_is_the_largest_divisor_of_the_local_batch(local_batch, tile_size, expected):
  assert blockwise_losses.tile_size_for(local_batch, tile_size) == expected


def test_training_with_the_blockwise_loss_follows_the_plain_run(tmp_path):
  def losses_of(workdir, **changes):
    config = tiny_runs.tiny_config(**{"total_steps": 3, **changes})
    train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as file:
      return [record["loss"] for record in map(json.loads, file) if "loss" in record]

  plain = losses_of(str(tmp_path / "plain"))
  blockwise = losses_of(str(tmp_path / "blockwise"), **{"loss.blockwise": True,
                                                         "loss.tile_size": 1})
  assert len(blockwise) == 3
  np.testing.assert_allclose(blockwise, plain, rtol=1e-5)


def test_bad_tile_size_names_the_key(tmp_path):
  with pytest.raises(ValueError, match=r"loss\.tile_size=0; allowed: integers >= 1"):
    train.train_and_evaluate(tiny_runs.tiny_config(**{"loss.tile_size": 0}), str(tmp_path))
