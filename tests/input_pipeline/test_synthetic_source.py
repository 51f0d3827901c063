"""The synthetic shapes dataset: determinism, coverage of the attributes, the held-out rule."""

import collections
import re

import numpy as np
import pytest
import tensorflow as tf

from clip_jax import settings
from input_pipeline.sources import synthetic


def data_settings(image_size=32, seed=0, **knobs) -> settings.Data:
  return settings.data_settings(name="synthetic", seed=seed, image_size=image_size,
                                context_length=16, tokenizer="words", **knobs)


def render_many(world, split, count):
  return [synthetic.render(world, split, index) for index in range(count)]


@pytest.fixture(scope="module")
def world():
  return synthetic.World.from_settings(data_settings())


@pytest.fixture(scope="module")
def training_samples(world):
  return render_many(world, "train", 600)


def test_samples_depend_only_on_seed_split_and_index(world):
  first, again = synthetic.render(world, "train", 7), synthetic.render(world, "train", 7)
  np.testing.assert_array_equal(first.image, again.image)
  assert first.caption == again.caption
  reseeded = synthetic.World.from_settings(data_settings(seed=1))
  for other in (synthetic.render(world, "train", 8), synthetic.render(world, "eval", 7),
                synthetic.render(reseeded, "train", 7)):
    assert not np.array_equal(first.image, other.image)


def test_scene_does_not_depend_on_image_size(world):
  large = synthetic.World.from_settings(data_settings(image_size=64))
  for index in range(20):
    small_sample, large_sample = synthetic.render(world, "train", index), synthetic.render(
        large, "train", index)
    assert large_sample.image.shape == (64, 64, 3)
    assert small_sample[1:] == large_sample[1:]  # caption, shape, colour, heldout


def test_images_are_uint8_and_show_the_shape_colour(world, training_samples):
  for sample in training_samples[:50]:
    assert sample.image.shape == (32, 32, 3) and sample.image.dtype == np.uint8
    if sample.colour == synthetic.UNCOLOURED:
      targets = [np.zeros(3), np.full(3, 255.0)]
    else:
      targets = [np.array(synthetic.COLOURS[world.colours[sample.colour]]) * 255]
    pixels = sample.image.reshape(-1, 1, 3).astype(float)
    closest = np.abs(pixels - np.array(targets)).max(axis=-1).min()
    assert closest < (synthetic.COLOUR_JITTER + 3 * synthetic.NOISE_STD) * 255 + 1


@pytest.mark.parametrize("name", list(synthetic.SHAPES))
def test_shapes_fill_most_of_the_unit_circle_and_nothing_outside(name):
  coordinates = np.linspace(-1.2, 1.2, 241)
  x, y = np.meshgrid(coordinates, coordinates)
  inside = synthetic.SHAPES[name](x, y) < 0
  assert np.hypot(x, y)[inside].max() <= 1.0
  assert 0.3 < inside.sum() / (np.hypot(x, y) < 1).sum() <= 1.0


def test_shapes_are_distinct():
  coordinates = np.linspace(-1, 1, 101)
  x, y = np.meshgrid(coordinates, coordinates)
  masks = {name: fn(x, y) < 0 for name, fn in synthetic.SHAPES.items()}
  for first, second in ((a, b) for a in masks for b in masks if a < b):
    union = (masks[first] | masks[second]).sum()
    assert (masks[first] & masks[second]).sum() / union < 0.85, (first, second)


def test_every_shape_and_colour_is_seen_in_training(world, training_samples):
  assert {sample.shape for sample in training_samples} == set(range(len(world.shapes)))
  colours = {sample.colour for sample in training_samples}
  assert colours == set(range(len(world.colours))) | {synthetic.UNCOLOURED}


def test_heldout_pairs_form_a_latin_square_diagonal(world):
  heldout = world.combinations[True]
  assert len(heldout) == 6 and len(world.combinations[False]) == 30
  assert sorted(shape for shape, _ in heldout) == list(range(6))
  assert sorted(colour for _, colour in heldout) == list(range(6))


def test_heldout_pairs_never_in_training_but_half_of_eval(world, training_samples):
  assert not any(sample.heldout for sample in training_samples)
  training_pairs = {(sample.shape, sample.colour) for sample in training_samples
                    if sample.colour != synthetic.UNCOLOURED}
  assert training_pairs == set(world.combinations[False])
  evaluation = render_many(world, "eval", 200)
  assert all(sample.colour != synthetic.UNCOLOURED for sample in evaluation)
  assert [sample.heldout for sample in evaluation] == [index % 2 == 1 for index in range(200)]
  assert {(s.shape, s.colour) for s in evaluation if s.heldout} == set(world.combinations[True])


def test_no_holdout_is_allowed():
  world = synthetic.World.from_settings(data_settings(holdout_diagonals=()))
  assert not world.combinations[True]
  assert not any(sample.heldout for sample in render_many(world, "eval", 20))


def test_captions_name_the_true_attributes_only():
  world = synthetic.World.from_settings(data_settings(shape_only_captions=0.3,
                                                      colour_only_captions=0.2))
  samples = render_many(world, "train", 600)
  mentions = collections.Counter()
  for sample in samples:
    words = set(re.findall(r"[a-z]+", sample.caption))
    assert words <= set(synthetic.vocabulary()), sample.caption
    named_shapes, named_colours = words & set(world.shapes), words & set(world.colours)
    assert named_shapes <= {world.shapes[sample.shape]}, sample.caption
    assert named_colours <= {world.colours[sample.colour]}, sample.caption
    mention = {(True, True): "full", (True, False): "shape", (False, True): "colour"}[
        (bool(named_shapes), bool(named_colours))]
    assert (mention == "shape") == (sample.colour == synthetic.UNCOLOURED), sample.caption
    mentions[mention] += 1
  for mention, fraction in (("shape", 0.3), ("colour", 0.2), ("full", 0.5)):
    assert abs(mentions[mention] / len(samples) - fraction) < 0.06, mentions


def test_an_before_a_vowel():
  world = synthetic.World.from_settings(data_settings(colours=("orange", "red")))
  captions = [sample.caption for sample in render_many(world, "train", 200)]
  assert any("an orange" in caption for caption in captions)
  assert not any("a orange" in caption for caption in captions)


def test_examples_dataset_keeps_index_order(world):
  indices = tf.data.Dataset.from_tensor_slices(tf.constant([5, 3, 70, 3], tf.int64))
  examples = list(synthetic.examples(data_settings(), indices).as_numpy_iterator())
  for example, index in zip(examples, [5, 3, 70, 3]):
    expected = synthetic.render(world, "train", index)
    np.testing.assert_array_equal(example["image"], expected.image)
    assert example["caption"].decode() == expected.caption
    assert (example["shape"], example["colour"], example["heldout"]) == expected[2:]


def test_the_world_is_the_settings():
  data = data_settings(image_size=24, seed=3, shapes=("star", "ring"), holdout_diagonals=(1,),
                       shape_only_captions=0.2, colour_only_captions=0.3)
  assert synthetic.World.from_settings(data) == synthetic.World(
      seed=3, image_size=24, shapes=("star", "ring"), colours=tuple(synthetic.COLOURS)[:6],
      holdout_diagonals=(1,), shape_only_captions=0.2, colour_only_captions=0.3)


@pytest.mark.parametrize("knobs, message", [
    (dict(shapes=("circle", "blob")), r"^data\.synthetic\.shapes=\('circle', 'blob'\); allowed: "
     r"two or more distinct names of circle, square, triangle, star, cross, heart, diamond, "
     r"ring\.$"),
    (dict(colours=("red", "red")), r"^data\.synthetic\.colours=\('red', 'red'\); allowed: two or "
     r"more distinct names of red, green, blue"),
    (dict(holdout_diagonals=(6,)), r"^data\.synthetic\.holdout_diagonals=\(6,\); allowed: fewer "
     r"than 6 distinct values, each in 0\.\.5"),
    (dict(holdout_diagonals=(0, 1, 2, 3, 4, 5)),
     r"^data\.synthetic\.holdout_diagonals=\(0, 1, 2, 3, 4, 5\); allowed: fewer than 6"),
    (dict(shape_only_captions=0.95), r"^data\.synthetic\.shape_only_captions=0\.95 and "
     r"colour_only_captions=0\.1; allowed: a sum <= 1\.$"),
    (dict(colour_only_captions=-0.1),
     r"^data\.synthetic\.colour_only_captions=-0\.1; allowed: numbers in \[0, 1\)\.$"),
    (dict(shape=("circle",)), r"^data\.synthetic\.shape=\('circle',\) is not a setting; "
     r"allowed: shapes, colours, holdout_diagonals, shape_only_captions, colour_only_captions\.$"),
])
def test_bad_knobs_name_the_key_value_and_allowed_values(knobs, message):
  config = settings.default_config()
  config.data.synthetic.update(knobs)
  with pytest.raises(ValueError, match=message):
    settings.parse(config)
