"""clip_jax.load's preprocessing against open_clip's on real photographs, for OpenAI's view
(shorter side, bicubic, centre crop, OpenAI's statistics) and for a squashing one (both sides,
bilinear, 0.5/0.5: SigLIP's), and its input contract."""

import functools
import os

import numpy as np
import pytest

from clip_jax import pretrained
from clip_jax.models import clip as clip_model
from clip_jax import image_preparation

skimage_data = pytest.importorskip("skimage.data")
PIL_Image = pytest.importorskip("PIL.Image")

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "camera")
IMAGE_SIZE = 224
# Measured on these photos with OpenAI's view: 0.03% of the values differ, each by one level of
# 8 bits (1/255/std, <= 0.0151 standardised); mean |difference| 4e-6 (at most 2e-5 a photo);
# features' cosine similarity (random ViT-B-32) >= 0.9999999. The squashing views, bicubic and
# bilinear, hold to the same bounds:
MAX_LEVELS = 1  # of 8 bits; standardised, 1 / 255 / std
SQUASH = image_preparation.Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                         resize_mode="squash", interpolation="bilinear")
VIEWS = {"openai": image_preparation.Preprocessing(), "squash_bilinear": SQUASH,
         "squash_bicubic": image_preparation.Preprocessing(resize_mode="squash")}
MAX_MEAN_ABS_DIFFERENCE = 1e-4
MIN_FEATURE_COSINE = 0.99999


def photo(name):
  pixels = getattr(skimage_data, name)()
  return np.stack([pixels] * 3, axis=-1) if pixels.ndim == 2 else pixels  # camera is grey


def open_clip_preprocess(pixels, view):
  """open_clip's `image_transform(size, is_train=False, mean, std, resize_mode, interpolation)`:
  torchvision's Resize (an int: the shorter side; a pair: both) on a PIL image, which calls
  PIL's resize with that filter, CenterCrop, ToTensor, Normalize. Written out with PIL as
  torchvision computes it (sizes truncated, offsets rounded), since torchvision itself is not in
  the test extra."""
  image = PIL_Image.fromarray(pixels)
  width, height = image.size
  if view.resize_mode == "squash":
    size = (IMAGE_SIZE, IMAGE_SIZE)
  else:
    short, long = min(width, height), max(width, height)
    new_long = int(IMAGE_SIZE * long / short)
    size = (IMAGE_SIZE, new_long) if width <= height else (new_long, IMAGE_SIZE)
  resample = {"bicubic": PIL_Image.BICUBIC, "bilinear": PIL_Image.BILINEAR}[view.interpolation]
  image = np.asarray(image.resize(size, resample), np.float32) / 255.0
  top = int(round((image.shape[0] - IMAGE_SIZE) / 2.0))
  left = int(round((image.shape[1] - IMAGE_SIZE) / 2.0))
  image = image[top:top + IMAGE_SIZE, left:left + IMAGE_SIZE]
  return (image - np.array(view.mean)) / np.array(view.std)


@pytest.fixture(scope="module")
def preprocess():
  return pretrained.make_preprocess(IMAGE_SIZE)


@pytest.fixture(scope="module")
def encode():
  import jax  # pylint: disable=g-import-not-at-top
  model = clip_model.create_model("ViT-B-32")
  variables = clip_model.init_variables(model.config, jax.random.PRNGKey(0))
  # The weights an argument rather than constants of the program: folded into it, ViT-B/32's
  # take a minute to compile.
  apply = jax.jit(functools.partial(model.apply, method=model.encode_image))
  return lambda images: apply(variables, images)


@pytest.mark.parametrize("view_name", VIEWS)
def test_preprocessing_matches_open_clip_on_photographs(view_name, encode):
  view = VIEWS[view_name]
  ours = pretrained.make_preprocess(IMAGE_SIZE, view)([photo(name) for name in PHOTOS])
  theirs = np.stack([open_clip_preprocess(photo(name), view) for name in PHOTOS])
  assert ours.shape == theirs.shape == (len(PHOTOS), IMAGE_SIZE, IMAGE_SIZE, 3)
  assert ours.dtype == np.float32
  differences = np.abs(ours - theirs)
  assert differences.max() < MAX_LEVELS / 255 / min(view.std) + 1e-6
  means = differences.mean(axis=(1, 2, 3))
  assert np.all(means < MAX_MEAN_ABS_DIFFERENCE), dict(zip(PHOTOS, means))
  cosines = np.sum(np.asarray(encode(ours)) * np.asarray(encode(theirs)), axis=-1)
  assert np.all(cosines > MIN_FEATURE_COSINE), dict(zip(PHOTOS, cosines))


def test_the_model_standardises_uint8_views_with_its_own_statistics():
  """uint8 views into a model whose config has 0.5/0.5 give the features of the float input
  standardised with 0.5/0.5, not with OpenAI's statistics."""
  import jax  # pylint: disable=g-import-not-at-top
  model = clip_model.create_model("tiny-vit", preprocessing=dict(mean=SQUASH.mean, std=SQUASH.std))
  pixels = pretrained.image_views([photo("coffee"), photo("camera")], 32, SQUASH)  # uint8
  assert pixels.dtype == np.uint8 and pixels.shape == (2, 32, 32, 3)
  floats = pretrained.make_preprocess(32, SQUASH)([photo("coffee"), photo("camera")])
  np.testing.assert_allclose(floats, (pixels / 255 - 0.5) / 0.5, atol=1e-6)
  variables = clip_model.init_variables(model.config, jax.random.PRNGKey(0))
  encode = lambda images: model.apply(variables, images, method=model.encode_image)  # noqa: E731
  np.testing.assert_allclose(encode(pixels), encode(floats), atol=1e-5)
  openai_floats = clip_model.standardize_images(pixels, image_preparation.Preprocessing())
  assert np.abs(np.asarray(encode(pixels)) - np.asarray(encode(openai_floats))).max() > 1e-3


def test_preprocess_takes_pil_images_arrays_and_lists(preprocess):
  pixels = photo("chelsea")
  one = preprocess(pixels)
  assert one.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)
  np.testing.assert_array_equal(preprocess(PIL_Image.fromarray(pixels)), one)
  np.testing.assert_array_equal(preprocess([pixels, pixels])[1], one[0])
  rgba = PIL_Image.fromarray(pixels).convert("RGBA")
  np.testing.assert_array_equal(preprocess(rgba), one)
  with pytest.raises(ValueError, match="uint8 arrays"):
    preprocess(pixels.astype(np.float32))


def test_load_names_what_is_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match="neither a converted checkpoint.*nor a training"):
    pretrained.load(str(tmp_path))


def test_load_a_training_workdir(tmp_path):
  """A workdir loads as its run's model, last parameters, tokenizer and image size; trained on 8
  devices, it loads the same in a process with one (a notebook beside a pod's run)."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from clip_jax import train  # pylint: disable=g-import-not-at-top
  import config_files  # pylint: disable=g-import-not-at-top
  config = config_files.load("synthetic_demo")
  config.total_steps, config.global_batch_size, config.log_every_steps = 3, 16, 1
  config.optim.warmup_steps = 1
  config.model.overrides = ml_collections.ConfigDict(dict(
      embed_dim=16, vision=dict(image_size=24, patch_size=8, width=32, layers=1, head_width=16),
      text=dict(context_length=16, vocab_size=128, width=32, layers=1, head_width=16)))
  config.evals = ml_collections.ConfigDict()
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)

  model, variables, preprocess, tokenize = pretrained.load(workdir)
  tokens = tokenize(["a red circle", "a blue square"])
  assert tokens.shape == (2, 16) and tokens.dtype == np.int32
  images = preprocess(np.zeros((40, 30, 3), np.uint8))
  assert images.shape == (1, 24, 24, 3)
  features = model.apply(variables, images, tokens)
  assert features["image_features"].shape == (1, 16)
  initial = clip_model.init_variables(model.config, jax.random.PRNGKey(0))["params"]
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), variables["params"], initial)
  assert any(jax.tree.leaves(changed))  # trained parameters, not a fresh initialisation

  import command_server  # pylint: disable=g-import-not-at-top
  from xla_flags import xla_flags  # pylint: disable=g-import-not-at-top
  leaves = str(tmp_path / "leaves.npz")
  one_device = command_server.run_python([
      "-c", "import sys, jax, numpy as np, clip_jax; assert jax.device_count() == 1; "
      "np.savez(sys.argv[2], *jax.tree.leaves(clip_jax.load(sys.argv[1]).variables))", workdir,
      leaves], env={**os.environ, "XLA_FLAGS": xla_flags(1)})
  assert one_device.returncode == 0, one_device.stderr[-3000:]
  with np.load(leaves) as loaded:
    for index, leaf in enumerate(jax.tree.leaves(variables)):
      np.testing.assert_array_equal(loaded[f"arr_{index}"], leaf)
