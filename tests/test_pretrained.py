"""clip_jax.load's preprocessing against OpenAI's (PIL bicubic resize, centre crop, CLIP's
statistics) on real photographs, and its input contract."""

import numpy as np
import pytest

from clip_jax import pretrained
from clip_jax.models import clip as clip_model

skimage_data = pytest.importorskip("skimage.data")
PIL_Image = pytest.importorskip("PIL.Image")

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "camera")
IMAGE_SIZE = 224
# Measured on these photos: 0.03% of the values differ, each by one level of 8 bits (1/255/std,
# <= 0.0151 standardised); mean |difference| 4e-6 (at most 2e-5 a photo); features' cosine
# similarity (random ViT-B-32) >= 0.9999999. The bounds:
MAX_ABS_DIFFERENCE = 1 / 255 / min(clip_model.CLIP_STD) + 1e-6  # one level
MAX_MEAN_ABS_DIFFERENCE = 1e-4
MIN_FEATURE_COSINE = 0.99999


def photo(name):
  pixels = getattr(skimage_data, name)()
  return np.stack([pixels] * 3, axis=-1) if pixels.ndim == 2 else pixels  # camera is grey


def openai_preprocess(pixels):
  """OpenAI's `_transform`: Resize(n, BICUBIC) on a PIL image, CenterCrop(n), ToTensor,
  Normalize; written out with PIL, as torchvision computes it (sizes truncated, offsets rounded)."""
  image = PIL_Image.fromarray(pixels)
  width, height = image.size
  short, long = min(width, height), max(width, height)
  new_long = int(IMAGE_SIZE * long / short)
  size = (IMAGE_SIZE, new_long) if width <= height else (new_long, IMAGE_SIZE)
  image = np.asarray(image.resize(size, PIL_Image.BICUBIC), np.float32) / 255.0
  top = int(round((image.shape[0] - IMAGE_SIZE) / 2.0))
  left = int(round((image.shape[1] - IMAGE_SIZE) / 2.0))
  image = image[top:top + IMAGE_SIZE, left:left + IMAGE_SIZE]
  return (image - np.array(clip_model.CLIP_MEAN)) / np.array(clip_model.CLIP_STD)


@pytest.fixture(scope="module")
def preprocess():
  return pretrained.make_preprocess(IMAGE_SIZE)


def test_preprocessing_matches_openai_on_photographs(preprocess):
  ours = preprocess([photo(name) for name in PHOTOS])  # [N, S, S, 3]
  theirs = np.stack([openai_preprocess(photo(name)) for name in PHOTOS])
  assert ours.shape == theirs.shape == (len(PHOTOS), IMAGE_SIZE, IMAGE_SIZE, 3)
  assert ours.dtype == np.float32
  differences = np.abs(ours - theirs)
  assert differences.max() < MAX_ABS_DIFFERENCE
  means = differences.mean(axis=(1, 2, 3))
  assert np.all(means < MAX_MEAN_ABS_DIFFERENCE), dict(zip(PHOTOS, means))

  model = clip_model.create_model("ViT-B-32")
  import jax  # pylint: disable=g-import-not-at-top
  variables = model.init(jax.random.PRNGKey(0), ours[:1], np.zeros((1, 77), np.int32))
  encode = jax.jit(lambda images: model.apply(variables, images, method=model.encode_image))
  cosines = np.sum(np.asarray(encode(ours)) * np.asarray(encode(theirs)), axis=-1)
  assert np.all(cosines > MIN_FEATURE_COSINE), dict(zip(PHOTOS, cosines))


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
  """A workdir loads as its run's model, last parameters, tokenizer and image size."""
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
  initial = model.init(jax.random.PRNGKey(0), images, tokens)["params"]
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), variables["params"], initial)
  assert any(jax.tree.leaves(changed))  # trained parameters, not a fresh initialisation
