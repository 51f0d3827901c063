"""FLIP's patch dropping: the configured fraction of patches, random per image and per key, the
right tokens kept; and whole images wherever dropping is not asked for (evaluation included)."""

import jax
import numpy as np
import pytest

from clip_jax import encoding
from clip_jax import flip
from clip_jax import settings
from clip_jax import sharding
from clip_jax.models import vision

NUM_PATCHES = 16  # tiny-vit: 32 px in 8 px patches.


@pytest.mark.parametrize("num_patches, ratio, keep", [
    (49, 0.0, 49), (49, 0.5, 24), (49, 0.75, 12),      # ViT-B/32; round() halves to even
    (196, 0.5, 98), (196, 0.75, 49), (9, 0.99, 1)])     # ViT-B/16; never fewer than one
def test_kept_patch_count(num_patches, ratio, keep):
  assert vision.kept_patch_count(num_patches, ratio) == keep


@pytest.mark.parametrize("ratio", [1.0, -0.1])
def test_a_ratio_outside_zero_to_one_is_refused(ratio):
  with pytest.raises(ValueError, match=rf"patch_dropout={ratio}; allowed: 0 <= ratio < 1"):
    vision.kept_patch_count(NUM_PATCHES, ratio)


def numpy_drop_patches(tokens: np.ndarray, ratio: float, rng: jax.Array) -> np.ndarray:
  """The reference: the same uniform noise, each image's `keep` lowest draws, in image order."""
  batch, num_patches = tokens.shape[0], tokens.shape[1] - 1
  keep = round((1 - ratio) * num_patches)
  noise = np.asarray(jax.random.uniform(rng, (batch, num_patches)))
  rows = []
  for image, draws in zip(tokens, noise):
    kept = np.sort(np.argsort(draws, kind="stable")[:keep])
    rows.append(np.concatenate([image[:1], image[1 + kept]]))
  return np.stack(rows)


def test_kept_patches_are_the_class_token_and_a_random_subset_as_numpy_draws_them():
  tokens = np.random.default_rng(0).normal(size=(6, 1 + NUM_PATCHES, 4)).astype(np.float32)
  rng = jax.random.PRNGKey(3)
  for ratio in (0.5, 0.75):
    indices = vision.kept_patch_indices(rng, len(tokens), NUM_PATCHES, ratio)
    assert indices.shape == (6, vision.kept_patch_count(NUM_PATCHES, ratio))
    dropped = np.asarray(jax.jit(vision.keep_patches)(tokens, indices))
    np.testing.assert_array_equal(dropped, numpy_drop_patches(tokens, ratio, rng))
    assert dropped.shape == (6, 1 + round((1 - ratio) * NUM_PATCHES), 4)


def test_kept_indices_are_distinct_and_differ_by_image_and_by_key():
  indices = np.asarray(vision.kept_patch_indices(jax.random.PRNGKey(0), 8, NUM_PATCHES, 0.5))
  for row in indices:
    assert len(set(row)) == 8 and list(row) == sorted(row) and 0 <= row.min() <= row.max() < 16
  assert len({tuple(row) for row in indices}) == 8
  other_key = np.asarray(vision.kept_patch_indices(jax.random.PRNGKey(1), 8, NUM_PATCHES, 0.5))
  assert not np.array_equal(indices, other_key)
  np.testing.assert_array_equal(
      vision.kept_patch_indices(jax.random.PRNGKey(0), 8, NUM_PATCHES, 0.5), indices)


def ln_pre_tokens(model, variables, images, tokens, **options) -> np.ndarray:
  """What the image tower's stack takes in: `ln_pre`'s output, [B, L, W]."""
  _, state = model.apply(variables, images, tokens, capture_intermediates=True,
                         mutable=["intermediates"], **options)
  return np.asarray(state["intermediates"]["visual"]["ln_pre"]["__call__"][0])


def matching_positions(kept: np.ndarray, full: np.ndarray) -> list[int]:
  """For each row of `kept` [L', W], the index of the row of `full` [L, W] it equals."""
  distances = np.abs(kept[:, None] - full[None]).max(axis=-1)              # [L', L]
  positions = distances.argmin(axis=-1)
  assert distances.min(axis=-1).max() < 1e-5  # every kept token is one of the full ones
  return positions.tolist()


@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_the_image_tower_sees_the_class_token_and_the_kept_patches_only(tiny_vit, ratio):
  model, variables, images, tokens = tiny_vit
  full = ln_pre_tokens(model, variables, images, tokens)                   # [B, 17, W]
  masked = lambda seed: ln_pre_tokens(model, variables, images, tokens, train=True,  # noqa: E731
                                      patch_dropout=ratio,
                                      rngs={"patch_dropout": jax.random.PRNGKey(seed)})
  keep = round((1 - ratio) * NUM_PATCHES)
  kept = masked(0)
  assert kept.shape == (images.shape[0], 1 + keep, full.shape[-1])
  positions = [matching_positions(image_kept, image_full)
               for image_kept, image_full in zip(kept, full)]
  for image_positions in positions:
    assert image_positions[0] == 0  # the class token
    assert len(set(image_positions)) == 1 + keep and image_positions == sorted(image_positions)
  assert len({tuple(image_positions) for image_positions in positions}) > 1  # per image
  np.testing.assert_array_equal(masked(0), kept)
  assert not np.array_equal(masked(1), kept)


def test_without_dropping_asked_for_the_model_computes_whole_images(tiny_vit):
  model, variables, images, tokens = tiny_vit
  encode = lambda **options: np.asarray(model.apply(  # noqa: E731
      variables, images, method=model.encode_image, **options))
  whole = encode()
  rngs = {"patch_dropout": jax.random.PRNGKey(0)}
  np.testing.assert_array_equal(encode(train=True), whole)
  np.testing.assert_array_equal(encode(train=True, patch_dropout=0.0, rngs=rngs), whole)
  np.testing.assert_array_equal(model.apply(variables, images, tokens)["image_features"], whole)
  assert np.abs(encode(train=True, patch_dropout=0.5, rngs=rngs) - whole).max() > 1e-3

  mesh = sharding.create_mesh()
  encode_image, _ = encoding.make_encoders(model, variables, mesh)
  np.testing.assert_allclose(encode_image(np.asarray(images)), whole, atol=1e-6)


def test_a_resnet_refuses_patch_dropout(tiny_rn):
  model, variables, images, _ = tiny_rn
  with pytest.raises(ValueError, match=r"patch_dropout=0\.5 with a ModifiedResNet image tower.*"
                                       r"allowed: 0"):
    model.apply(variables, images, method=model.encode_image, patch_dropout=0.5,
                rngs={"patch_dropout": jax.random.PRNGKey(0)})


def test_the_last_unmasked_steps_train_on_whole_images():
  given = settings.Flip(mask_ratio=0.5, unmasked_steps=2)
  assert [flip.mask_ratio_at(step, given, 6) for step in range(1, 7)] == [0.5] * 4 + [0.0] * 2
  assert flip.mask_ratio_at(6, settings.Flip(), 6) == 0.0
  everything_masked = settings.Flip(mask_ratio=0.75)
  assert flip.first_unmasked_step(everything_masked, 6) == 7
