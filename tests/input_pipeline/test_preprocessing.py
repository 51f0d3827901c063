"""Decoding and CLIP's augmentations against PIL (open_clip's reference) and torchvision's rules.

Images are made here with numpy and PIL. Every function runs traced, as inside tf.data.
"""

import functools
import io
import math
import struct
import zlib

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from input_pipeline import preprocessing

# PIL resamples in fixed point, TF in float: on photographs at most 1 apart (in ~1e-4 of the
# pixels); 2 was seen in a few upsampled pixels of synthetic high-contrast patterns.
_MAX_PIL_DIFFERENCE = 2

_BYTES = tf.TensorSpec([], tf.string)
_SEED = tf.TensorSpec([2], tf.int64)

_decode = tf.function(preprocessing.decode_image, input_signature=[_BYTES])
_window = tf.function(preprocessing.random_resized_crop_window)


@functools.lru_cache(maxsize=None)
def train_fn(image_size, **kwargs):
  """Traced once per configuration."""
  return tf.function(lambda data, seed: preprocessing.train_image(data, image_size, seed, **kwargs),
                     input_signature=[_BYTES, _SEED])


@functools.lru_cache(maxsize=None)
def eval_fn(image_size):
  return tf.function(lambda data: preprocessing.eval_image(data, image_size),
                     input_signature=[_BYTES])


def seed(value):
  return tf.constant([1234, value], tf.int64)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, fmt, **options)
  return buffer.getvalue()


def pil_rgb(data: bytes) -> np.ndarray:
  """open_clip's decoding."""
  return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def photo(height, width, seed=0) -> np.ndarray:
  """Photograph-like uint8 [H, W, 3]: smooth gradients, texture, noise and hard edges."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width]
  image = np.stack([128 + 100 * np.sin(x / 37.0 + y / 53.0), x * 255.0 / width,
                    y * 255.0 / height], axis=-1)
  image += rng.normal(0, 12, image.shape)
  image[height // 3:height // 2, width // 4:width // 2] = [250, 20, 60]
  disc = (x - width // 2) ** 2 + (y - height // 2) ** 2 < (min(height, width) // 5) ** 2
  image[disc] = [10, 10, 240]
  return np.clip(image, 0, 255).astype(np.uint8)


def png16(pixels: np.ndarray) -> bytes:
  """A 16-bit RGB/RGBA PNG [H, W, 3 or 4], which PIL cannot write."""
  height, width, channels = pixels.shape
  rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)

  def chunk(kind, payload):
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload)))

  colour_type = {3: 2, 4: 6}[channels]
  header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
          + chunk(b"IEND", b""))


def ycck_jpeg(rgb: np.ndarray) -> bytes:
  """A YCCK JPEG (Adobe transform 2) meant to show `rgb`; PIL only writes plain CMYK.

  libjpeg decodes YCCK as C, M, Y = 255 - RGB(Y, Cb, Cr) and K as stored, and Adobe CMYK is
  stored inverted, so RGB = C * K / 255. Storing YCbCr(255 - rgb) and K = 255 shows rgb. PIL
  stores CMYK inverted, hence the 255 - below; then the Adobe marker's transform is patched.
  """
  ycc = np.asarray(Image.fromarray(255 - rgb).convert("YCbCr"))
  cmyk = np.dstack([255 - ycc, np.zeros(rgb.shape[:2], np.uint8)])
  data = bytearray(encode(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95))
  transform = data.index(b"Adobe") + 11
  assert data[transform] == 0
  data[transform] = 2
  return bytes(data)


_RGB = photo(37, 53, seed=1)
_ALPHA = np.random.default_rng(2).integers(0, 256, _RGB.shape[:2], dtype=np.uint8)
_PALETTE = Image.fromarray(_RGB).quantize(64)


def lossless_files():
  rgba = Image.fromarray(np.dstack([_RGB, _ALPHA]))
  gray = Image.fromarray(_RGB[..., 0])
  rgb16 = np.random.default_rng(3).integers(0, 65536, (*_RGB.shape[:2], 4)).astype(np.uint16)
  return {
      "png_rgb": encode(Image.fromarray(_RGB), "PNG"),
      "png_rgba": encode(rgba, "PNG"),
      "png_gray": encode(gray, "PNG"),
      "png_gray_alpha": encode(Image.fromarray(np.dstack([_RGB[..., 0], _ALPHA]), "LA"), "PNG"),
      "png_1bit": encode(Image.fromarray(_RGB[..., 0] > 128), "PNG"),
      "png_palette": encode(_PALETTE, "PNG"),
      "png_palette_transparency": encode(_PALETTE, "PNG", transparency=3),
      "png_palette_alpha": encode(rgba.quantize(64, method=Image.Quantize.FASTOCTREE), "PNG"),
      "png_rgb_16bit": png16(rgb16[..., :3]),
      "png_rgba_16bit": png16(rgb16),
      "gif": encode(_PALETTE, "GIF"),
      "gif_animated": encode(_PALETTE, "GIF", save_all=True,
                             append_images=[Image.fromarray(255 - _RGB).quantize(64)]),
      "bmp_rgb": encode(Image.fromarray(_RGB), "BMP"),
      "bmp_rgba": encode(rgba, "BMP"),
      "bmp_gray": encode(gray, "BMP"),
      "bmp_palette": encode(_PALETTE, "BMP"),
      "webp_lossless": encode(Image.fromarray(_RGB), "WEBP", lossless=True),
      "webp_lossless_alpha": encode(rgba, "WEBP", lossless=True),
      "webp_animated_alpha": encode(rgba, "WEBP", lossless=True, save_all=True,
                                    append_images=[Image.fromarray(255 - _RGB)]),
  }


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")
@pytest.mark.parametrize("name", sorted(lossless_files()))
def test_lossless_formats_decode_exactly_like_pil(name):
  data = lossless_files()[name]
  image = _decode(data).numpy()
  assert image.shape == (*_RGB.shape[:2], 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image, pil_rgb(data))


def test_lossy_webp_decodes_exactly_like_pil():
  """Both use libwebp; with and without alpha (a VP8X file)."""
  for pixels in (_RGB, np.dstack([_RGB, _ALPHA])):
    data = encode(Image.fromarray(pixels), "WEBP", quality=80)
    np.testing.assert_array_equal(_decode(data).numpy(), pil_rgb(data))


def test_palette_bmp_shows_colours_not_indices():
  """TF alone returns 8-bit BMPs as palette indices; a non-grey palette exposes that."""
  image = _decode(encode(_PALETTE, "BMP")).numpy()
  np.testing.assert_array_equal(image, np.asarray(_PALETTE.convert("RGB")))
  assert (image[..., 0] != image[..., 2]).mean() > 0.5  # Indices would be grey.


_JPEG_VARIANTS = {
    "444": dict(subsampling=0),
    "422": dict(subsampling=1),
    "420": dict(subsampling=2),
    "progressive": dict(progressive=True),
}


@pytest.mark.parametrize("variant", sorted(_JPEG_VARIANTS))
def test_jpeg_decodes_exactly_like_pil(variant):
  """Both use libjpeg-turbo; with its accurate integer IDCT (as PIL) they agree exactly."""
  pixels = photo(75, 101)
  data = encode(Image.fromarray(pixels), "JPEG", quality=90, **_JPEG_VARIANTS[variant])
  image = _decode(data).numpy()
  np.testing.assert_array_equal(image, pil_rgb(data))
  assert np.abs(image.astype(int) - pixels).mean() < 12  # JPEG's loss on a noisy photo.


def test_grayscale_jpeg_is_replicated_to_rgb():
  data = encode(Image.fromarray(_RGB[..., 0]), "JPEG", quality=90)
  image = _decode(data).numpy()
  np.testing.assert_array_equal(image, pil_rgb(data))
  np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_cmyk_jpeg_is_converted_to_rgb():
  """Adobe CMYK as Photoshop and PIL write it (inverted, APP14 marker)."""
  pixels = photo(64, 80)
  data = encode(Image.fromarray(pixels).convert("CMYK"), "JPEG", quality=95)
  image = _decode(data).numpy()
  np.testing.assert_array_equal(image, pil_rgb(data))
  assert np.abs(image.astype(int) - pixels).mean() < 3


def test_ycck_jpeg_is_converted_to_rgb():
  pixels = photo(64, 80)
  data = ycck_jpeg(pixels)
  assert Image.open(io.BytesIO(data)).info["adobe_transform"] == 2
  image = _decode(data).numpy()
  np.testing.assert_array_equal(image, pil_rgb(data))
  assert np.abs(image.astype(int) - pixels).mean() < 4


def test_16bit_grayscale_png_keeps_the_high_byte():
  """Deliberately unlike PIL, whose convert("RGB") clips 16-bit grey to 255 (white)."""
  values = np.random.default_rng(4).integers(0, 65536, _RGB.shape[:2]).astype(np.uint16)
  data = encode(Image.fromarray(values), "PNG")
  assert Image.open(io.BytesIO(data)).mode == "I;16"
  image = _decode(data).numpy()
  np.testing.assert_array_equal(image, np.repeat((values >> 8).astype(np.uint8)[..., None], 3, -1))


def test_transparent_gif_pixels_are_black():
  """TF blacks out a GIF's transparent index; PIL shows that palette entry's colour."""
  data = encode(_PALETTE, "GIF", transparency=3)
  transparent = np.asarray(Image.open(io.BytesIO(data))) == 3
  assert 0 < transparent.sum() < transparent.size
  image = _decode(data).numpy()
  np.testing.assert_array_equal(image[~transparent], pil_rgb(data)[~transparent])
  assert (image[transparent] == 0).all()


@pytest.mark.parametrize("fmt,options", [("JPEG", {}), ("PNG", {}), ("GIF", {}), ("BMP", {}),
                                         ("WEBP", {"lossless": True})])
def test_one_pixel_images(fmt, options):
  pixel = np.array([[[200, 40, 90]]], np.uint8)
  data = encode(Image.fromarray(pixel), fmt, **options)
  image = _decode(data).numpy()
  assert image.shape == (1, 1, 3)
  np.testing.assert_array_equal(image, pil_rgb(data))
  # Resizing a constant image gives the constant.
  constant = np.broadcast_to(image, (8, 8, 3))
  np.testing.assert_array_equal(train_fn(8, exact_resize=True)(data, seed(0)).numpy(), constant)
  np.testing.assert_array_equal(eval_fn(8)(data).numpy(), constant)
  # The fast path decodes JPEGs with libjpeg's fast IDCT: the constant within a level.
  fast = train_fn(8)(data, seed(0)).numpy().astype(int)
  assert (fast == fast[0, 0]).all() and np.abs(fast[0, 0] - image[0, 0]).max() <= 1


def test_very_large_jpeg():
  """8000 x 6000 (48 MP); flat blocks keep the encoding fast."""
  blocks = np.random.default_rng(5).integers(0, 256, (6, 8, 3), dtype=np.uint8)
  pixels = np.repeat(np.repeat(blocks, 1000, axis=0), 1000, axis=1)  # [6000, 8000, 3]
  data = encode(Image.fromarray(pixels), "JPEG", quality=90)
  image = eval_fn(224)(data).numpy()
  assert np.abs(image.astype(int) - pil_eval(pil_rgb(data), 224)).max() <= _MAX_PIL_DIFFERENCE
  assert train_fn(224)(data, seed(0)).shape == (224, 224, 3)


def _truncated_jpegs():
  data = encode(Image.fromarray(photo(96, 128)), "JPEG", quality=90)
  progressive = encode(Image.fromarray(photo(96, 128)), "JPEG", quality=90, progressive=True)
  return {"jpeg_half": data[:len(data) // 2], "jpeg_no_end_marker": data[:-2],
          "jpeg_header_only": data[:400],
          "progressive_jpeg_half": progressive[:len(progressive) // 2]}


def _bad_inputs():
  png = encode(Image.fromarray(_RGB), "PNG")
  rle_bmp = bytearray(encode(_PALETTE, "BMP"))
  rle_bmp[30] = 1  # BI_RLE8, which TF would read as raw pixels.
  return {
      **_truncated_jpegs(),
      "empty": b"",
      "random": np.random.default_rng(6).bytes(5000),
      "html": b"<!DOCTYPE html><html><head><title>404 Not Found</title></head></html>",
      "png_half": png[:len(png) // 2],
      "webp_animated_without_alpha": encode(Image.fromarray(_RGB), "WEBP", lossless=True,
                                            save_all=True,
                                            append_images=[Image.fromarray(255 - _RGB)]),
      "bmp_rle": bytes(rle_bmp),
      # Cut inside the header fields the decoder reads itself.
      "webp_header_only": lossless_files()["webp_lossless"][:21],
      "bmp_header_only": bytes(rle_bmp[:20]),
  }


@pytest.mark.parametrize("name", sorted(_bad_inputs()))
def test_bad_input_raises(name):
  data = _bad_inputs()[name]
  calls = [lambda: _decode(data), lambda: eval_fn(32)(data), lambda: train_fn(32)(data, seed(0)),
           lambda: train_fn(32, exact_resize=True)(data, seed(0))]
  for call in calls:
    with pytest.raises(tf.errors.InvalidArgumentError):
      call()


def _sized_files():
  """Every format and variant the decoder reads, at a size whose sides differ."""
  pixels = photo(75, 101)
  return {**lossless_files(),
          **{f"jpeg_{variant}": encode(Image.fromarray(pixels), "JPEG", quality=90, **options)
             for variant, options in _JPEG_VARIANTS.items()},
          "webp_lossy": encode(Image.fromarray(pixels), "WEBP", quality=80),
          "webp_lossy_alpha": encode(Image.fromarray(np.dstack([_RGB, _ALPHA])), "WEBP",
                                     quality=80),
          "bmp_top_down": bmp_top_down(_RGB)}


def bmp_top_down(pixels: np.ndarray) -> bytes:
  """A BMP with a negative height (rows stored top first), which PIL reads but does not write."""
  data = bytearray(encode(Image.fromarray(pixels[::-1]), "BMP"))
  data[22:26] = struct.pack("<i", -pixels.shape[0])
  return bytes(data)


_header_size = tf.function(preprocessing.header_size, input_signature=[_BYTES])


@pytest.mark.parametrize("name", sorted(_sized_files()))
def test_header_size_is_the_decoded_size(name):
  data = _sized_files()[name]
  height, width = Image.open(io.BytesIO(data)).size[::-1]
  assert [int(value) for value in _header_size(data)] == [height, width]


def png_bomb(height: int, width: int) -> bytes:
  """A PNG of zeros of `height` x `width`: ~1000:1 compressed (16384^2 RGB: 0.8 GB decoded)."""
  compressor, row = zlib.compressobj(9), b"\0" * (1 + 3 * width)
  idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

  def chunk(kind, payload):
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload)))

  header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_bomb(height: int, width: int) -> bytes:
  """A small JPEG whose frame header is patched to declare `height` x `width`."""
  data = bytearray(encode(Image.fromarray(photo(16, 16)), "JPEG"))
  frame = data.index(b"\xff\xc0")  # SOF0: marker, length, precision, height, width
  data[frame + 5:frame + 9] = struct.pack(">HH", height, width)
  return bytes(data)


def test_decompression_bombs_are_refused_from_their_headers():
  bombs = {"png": png_bomb(16384, 16384), "jpeg": jpeg_bomb(60000, 60000)}
  assert len(bombs["png"]) < 1 << 20  # ~0.8 GB of pixels in under a MiB
  for name, data in bombs.items():
    assert int(np.prod(_header_size(data))) > preprocessing.MAX_IMAGE_PIXELS, name
    for call in (lambda: eval_fn(32)(data), lambda: train_fn(32)(data, seed(0)),
                 lambda: train_fn(32, exact_resize=True)(data, seed(0))):
      with pytest.raises(tf.errors.InvalidArgumentError, match="declares more than 89478485"):
        call()
  # A limit of one's own, in pixels: the 75 x 101 photo passes 7,575 and fails 7,574.
  data = _sized_files()["png_rgb"]
  limited = lambda limit: tf.function(  # noqa: E731
      lambda data: preprocessing.eval_image(data, 16, max_pixels=limit))(data)
  assert limited(37 * 53).shape == (16, 16, 3)
  with pytest.raises(tf.errors.InvalidArgumentError, match="declares more than 1960 pixels"):
    limited(37 * 53 - 1)


def test_ignore_errors_drops_bad_elements():
  """How the pipeline uses these functions: bad elements vanish, good ones keep their order."""
  good = [encode(Image.fromarray(photo(30 + i, 40)), "PNG") for i in range(3)]
  bad = list(_bad_inputs().values())
  elements = [good[0], *bad, good[1], good[2]]
  dataset = (tf.data.Dataset.from_tensor_slices(elements)
             .map(lambda data: preprocessing.eval_image(data, 16)).ignore_errors())
  images = list(dataset.as_numpy_iterator())
  assert len(images) == 3
  for image, data in zip(images, good):
    np.testing.assert_array_equal(image, eval_fn(16)(data).numpy())


# --- The fast training resize --------------------------------------------------------------


@pytest.mark.parametrize("height, width, size", [(900, 1200, 224), (480, 640, 224), (90, 120, 32)])
def test_fast_train_image_is_close_to_the_exact_one(height, width, size):
  """JPEG decoded at a reduced scale (1/2 for the first, 1/2..1/4 for the last) and bicubic
  without antialiasing: the same crop, and pixels close to PIL's antialiased resize of it."""
  data = encode(Image.fromarray(photo(height, width, seed=3)), "JPEG", quality=95)
  fast, exact = train_fn(size), train_fn(size, exact_resize=True)
  for value in range(4):
    difference = np.abs(fast(data, seed(value)).numpy().astype(int)
                        - exact(data, seed(value)).numpy().astype(int))
    assert difference.mean() < 4.0, (value, difference.mean())


# --- RandomResizedCrop -----------------------------------------------------------------------


def _draw_windows(height, width, count, **kwargs):
  """Windows for seed(0) ... seed(count - 1): int [count, 4]."""

  def draw(seed):
    return preprocessing.random_resized_crop_window(height, width, seed, **kwargs)

  seeds = tf.stack([tf.fill([count], tf.constant(1234, tf.int64)),
                    tf.range(count, dtype=tf.int64)], axis=1)
  return tf.function(lambda: tf.map_fn(draw, seeds, fn_output_signature=tf.int32))().numpy()


def torchvision_windows(height, width, count, scale, ratio, rng):
  """torchvision's RandomResizedCrop.get_params, transcribed with numpy's generator."""
  windows = []
  for _ in range(count):
    for _ in range(10):
      area = height * width * rng.uniform(*scale)
      aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
      w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
      if 0 < w <= width and 0 < h <= height:
        windows.append((rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w))
        break
    else:
      windows.append((-1, -1, -1, -1))  # Fallback; its rule is tested separately.
  return np.array(windows)


def test_crop_windows_follow_torchvision_distribution():
  """ImageNet's scale=(0.08, 1), where many attempts fail and the first-fit rule matters."""
  height, width, count = 375, 500, 1500
  scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
  ours = _draw_windows(height, width, count, scale=scale, ratio=ratio)
  reference = torchvision_windows(height, width, count, scale, ratio, np.random.default_rng(9))
  for windows in (ours, reference):
    accepted = windows[windows[:, 0] >= 0]
    assert (accepted[:, 0] + accepted[:, 2] <= height).all()
    assert (accepted[:, 1] + accepted[:, 3] <= width).all()
  # Statistics of the accepted windows: means and spreads within ~5 standard errors.
  ours, reference = ours.astype(float), reference[reference[:, 0] >= 0].astype(float)
  for column in range(4):  # top, left, h, w
    std = reference[:, column].std()
    tolerance = 5 * std * math.sqrt(2 / count)
    assert abs(ours[:, column].mean() - reference[:, column].mean()) < tolerance
    assert abs(ours[:, column].std() / std - 1) < 0.1
  fraction = ours[:, 2] * ours[:, 3] / (height * width)
  aspect = ours[:, 3] / ours[:, 2]
  assert fraction.min() >= 0.08 * 0.97 and fraction.max() <= 1.0
  assert aspect.min() >= 3 / 4 * 0.97 and aspect.max() <= 4 / 3 * 1.03


def ks_distance_to_uniform(samples, low, high):
  """Kolmogorov-Smirnov distance of the samples' empirical CDF to U(low, high)."""
  samples = np.sort(samples)
  uniform_cdf = np.clip((samples - low) / (high - low), 0, 1)
  ranks = np.arange(1, len(samples) + 1) / len(samples)
  return max(np.abs(ranks - uniform_cdf).max(),
             np.abs(ranks - 1 / len(samples) - uniform_cdf).max())


def test_area_fraction_and_log_aspect_are_uniform_when_every_attempt_fits():
  """Catches e.g. a uniform (not log-uniform) aspect ratio: a KS distance of about 0.07."""
  windows = _draw_windows(1000, 1000, 1000, scale=(0.08, 0.2))
  height, width = windows[:, 2].astype(float), windows[:, 3].astype(float)
  assert ks_distance_to_uniform(height * width / 1e6, 0.08, 0.2) < 0.05
  assert ks_distance_to_uniform(np.log(width / height), math.log(3 / 4), math.log(4 / 3)) < 0.05


@pytest.mark.parametrize("height,width,expected", [
    (10, 1000, (0, 493, 10, 13)),  # Too wide: h = 10, w = round(10 * 4 / 3), centred.
    (1000, 10, (493, 0, 13, 10)),  # Too tall: w = 10, h = round(10 / (3 / 4)).
    # With scale (0.9, 1), no attempt fits an image wider than 4:3 (or taller than 3:4): a 3:2
    # photo always gets its central 4:3 crop, w = round(333 * 4 / 3) = 444.
    (333, 500, (0, 28, 333, 444)),
])
def test_fallback_is_the_central_crop_with_clamped_ratio(height, width, expected):
  for window in _draw_windows(height, width, 5):
    assert tuple(window) == expected


def test_train_image_equals_pil_crop_and_resize():
  """torchvision on PIL: img.crop(window).resize((size, size), BICUBIC).

  Wide and tall windows make PIL (13) resample vertically first for some, horizontally first
  for others; both orders must match.
  """
  pixels = photo(120, 160, seed=10)
  data = encode(Image.fromarray(pixels), "PNG")
  options = dict(scale=(0.1, 1.0), ratio=(1 / 3, 3.0))
  train = train_fn(56, exact_resize=True, **options)
  vertical_first = 0
  for value in range(16):
    top, left, h, w = _window(120, 160, seed(value), **options).numpy()
    vertical_first += bool(h - 56 > max(0, 2 * (w - 56)))
    reference = Image.fromarray(pixels).crop((left, top, left + w, top + h))
    difference = np.abs(train(data, seed(value)).numpy().astype(int)
                        - np.asarray(reference.resize((56, 56), Image.BICUBIC)))
    assert difference.max() <= _MAX_PIL_DIFFERENCE and difference.mean() < 0.002
  assert 0 < vertical_first < 16


def test_train_image_shape_determinism_and_variety():
  data = encode(Image.fromarray(photo(200, 200)), "JPEG", quality=90)
  train = train_fn(48)
  first = train(data, seed(0)).numpy()
  assert first.shape == (48, 48, 3) and first.dtype == np.uint8
  assert first.min() < 50 and first.max() > 200  # The full range of the photo, not rescaled.
  np.testing.assert_array_equal(first, train(data, seed(0)).numpy())
  # With scale (0.9, 1) about 11% of square images get the fallback (the whole image).
  distinct = {train(data, seed(value)).numpy().tobytes() for value in range(16)}
  assert len(distinct) >= 10
  train = train_fn(48, scale=(0.3, 0.6))  # Here every first attempt fits.
  assert len({train(data, seed(value)).numpy().tobytes() for value in range(16)}) == 16


def coordinate_png(height, width) -> bytes:
  """Red = column, green = row: a resized crop shows where it came from."""
  y, x = np.mgrid[0:height, 0:width]
  return encode(Image.fromarray(np.stack([x, y, np.full_like(x, 128)], -1).astype(np.uint8)),
                "PNG")


@pytest.mark.parametrize("scale", [(0.9, 1.0), (0.3, 0.6)])
def test_crop_area_fraction_measured_from_pixels(scale):
  """The crop's area and aspect ratio, read off a coordinate image.

  Upsampling a linear ramp reproduces it away from the edges, so two interior columns give
  the crop's width: x(j) = left + (j + 0.5) * w / size - 0.5.
  """
  height, width, size, count = 200, 250, 256, 150
  train = train_fn(size, scale=scale)
  data = coordinate_png(height, width)
  fractions, aspects = [], []
  for value in range(count):
    image = train(data, seed(value)).numpy().astype(float)
    crop_w = (image[:, 235, 0] - image[:, 20, 0]).mean() * size / 215
    crop_h = (image[235, :, 1] - image[20, :, 1]).mean() * size / 215
    fractions.append(crop_w * crop_h / (height * width))
    aspects.append(crop_w / crop_h)
  fractions, aspects = np.array(fractions), np.array(aspects)
  assert fractions.min() > scale[0] - 0.02 and fractions.max() < scale[1] + 0.02
  assert aspects.min() > 3 / 4 - 0.03 and aspects.max() < 4 / 3 + 0.03
  if scale == (0.3, 0.6):  # Every attempt fits here: the fraction is ~ U(0.3, 0.6).
    assert abs(fractions.mean() - 0.45) < 0.03
    assert fractions.min() < 0.33 and fractions.max() > 0.57


# --- Evaluation ------------------------------------------------------------------------------


def pil_eval(pixels: np.ndarray, size: int) -> np.ndarray:
  """OpenAI's eval transform: torchvision Resize(size) + CenterCrop(size) on PIL, bicubic."""
  height, width = pixels.shape[:2]
  if height <= width:
    new_h, new_w = size, int(size * width / height)
  else:
    new_h, new_w = int(size * height / width), size
  resized = Image.fromarray(pixels).resize((new_w, new_h), Image.BICUBIC)
  top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
  return np.asarray(resized.crop((left, top, left + size, top + size)))


@pytest.mark.parametrize("height,width,size", [
    (375, 500, 224),  # Landscape photo.
    (600, 400, 224),  # Portrait.
    (375, 501, 224),  # Centre offset (299 - 224) / 2 = 37.5 rounds to even: 38.
    (150, 120, 224),  # Upsampling.
    (333, 517, 64),
])
def test_eval_image_matches_pil(height, width, size):
  pixels = photo(height, width, seed=height + width)
  image = eval_fn(size)(encode(Image.fromarray(pixels), "PNG")).numpy()
  reference = pil_eval(pixels, size)
  difference = np.abs(image.astype(int) - reference)
  # Measured: max 1, mean 1e-4 to 2e-4 (a few pixels in 10^4 round differently).
  assert image.shape == (size, size, 3) and image.dtype == np.uint8
  assert difference.max() <= _MAX_PIL_DIFFERENCE and difference.mean() < 0.002


@pytest.mark.parametrize("size", [40, 200])
def test_eval_image_clips_overshoot_like_pil(size):
  """Bicubic overshoots next to black/white edges; PIL clips to [0, 255] rather than wrap."""
  y, x = np.mgrid[0:90, 0:120]
  pixels = np.repeat(np.where((x // 7 + y // 11) % 2, 255, 0).astype(np.uint8)[..., None], 3, -1)
  image = eval_fn(size)(encode(Image.fromarray(pixels), "PNG")).numpy()
  difference = np.abs(image.astype(int) - pil_eval(pixels, size))
  assert difference.max() <= _MAX_PIL_DIFFERENCE and difference.mean() < 0.002
