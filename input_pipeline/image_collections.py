"""Image collections as the tools that use a pretrained model meet them: a folder of image files,
a glob or brace pattern of them, or WebDataset tar shards, read in a fixed order, shard by shard.

A shard is the unit of work and of output of those tools (clip_jax.embed, filter_shards): one tar
file, or a run of `files_per_shard` image files in sorted order. Its samples are decoded and given
the model's evaluation view in a tf.data pipeline (`views`); a sample that does not decode is
left out and named, never fatal.
"""

from __future__ import annotations

import os
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from clip_jax import image_preparation
from input_pipeline import preprocessing
from input_pipeline.sources import file_lists
from input_pipeline.sources import webdataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
IMAGE_EXTENSIONS = tuple(suffix[1:] for suffix in IMAGE_SUFFIXES)  # of WebDataset members
CAPTION_EXTENSION = "txt"


class Shard(NamedTuple):
  index: int
  files: tuple[str, ...]  # one tar file, or image files
  is_tar: bool


class Sample(NamedTuple):
  key: str  # the file's path under the folder, or the WebDataset key
  source: str  # the image file, or the tar file
  offset: int  # of the sample's first header in the tar file; -1 for a file
  caption: str  # a WebDataset sample's caption member, or ""
  image: bytes  # b"" when there is none
  members: dict[str, bytes]  # a WebDataset sample's members, for tools that write them again


def list_inputs(images: str) -> tuple[list[str], bool]:
  """(the files of a collection in order, whether they are tar shards): a folder's image files
  (recursively, sorted), or what a brace pattern, glob or comma-separated list names."""
  if os.path.isdir(images):
    found = sorted(os.path.join(directory, name) for directory, _, names in os.walk(images)
                   for name in names if name.lower().endswith(IMAGE_SUFFIXES))
    if not found:
      raise ValueError(f"--images={images!r}: the folder holds no image file; allowed suffixes: "
                       f"{', '.join(IMAGE_SUFFIXES)}.")
    return found, False
  found = file_lists.expand(images.split(","), key="--images")
  tars = [path.endswith(".tar") for path in found]
  if any(tars) and not all(tars):
    raise ValueError(f"--images={images!r} names tar shards and other files; allowed: a folder, "
                     "image files, or WebDataset .tar shards.")
  return found, all(tars)


def make_shards(inputs: Sequence[str], is_tar: bool, files_per_shard: int) -> list[Shard]:
  if is_tar:
    return [Shard(index, (path,), True) for index, path in enumerate(inputs)]
  return [Shard(index, tuple(inputs[start:start + files_per_shard]), False)
          for index, start in enumerate(range(0, len(inputs), files_per_shard))]


def read_shard(shard: Shard, root: str = "",
               max_member_bytes: int = webdataset.MAX_MEMBER_BYTES) -> Iterator[Sample]:
  """The shard's samples in order. A file's key is its path relative to `root` (the folder).
  Tar members of more than `max_member_bytes` are left out unread; an image file of more is
  given as no image."""
  if shard.is_tar:
    offset = 0
    for key, members, next_offset in webdataset.read_samples(shard.files[0], 0,
                                                             max_member_bytes):
      image = next((members[extension] for extension in IMAGE_EXTENSIONS
                    if extension in members), b"")
      caption = members.get(CAPTION_EXTENSION, b"").decode("utf-8", errors="replace")
      yield Sample(key, shard.files[0], offset, caption.strip(), image, members)
      offset = next_offset
    return
  for path in shard.files:
    try:
      with tf.io.gfile.GFile(path, "rb") as file:
        image = file.read(max_member_bytes + 1)
    except (OSError, tf.errors.OpError):
      image = b""  # unreadable: skipped as an image that does not decode
    if len(image) > max_member_bytes:
      image = b""
    source = path if "://" in path else os.path.abspath(path)
    yield Sample(os.path.relpath(path, root) if root else path, source, -1, "", image, {})


def read_sample_image(source: str, offset: int) -> bytes:
  """The image bytes of a sample that `read_shard` gave: its file, or the sample at `offset` of
  its tar file."""
  if offset < 0:
    with tf.io.gfile.GFile(source, "rb") as file:
      return file.read()
  _, members, _ = next(webdataset.read_samples(source, offset))
  return next(members[extension] for extension in IMAGE_EXTENSIONS if extension in members)


def skip_reason(sample: Sample, max_pixels: int = preprocessing.MAX_IMAGE_PIXELS) -> str:
  """Why `views` left a sample out, for the tools' reports."""
  if not sample.image:
    return "no image"  # none in the sample, or one over the byte limit, left unread
  try:
    height, width = preprocessing.header_size(tf.constant(sample.image))
  except tf.errors.OpError:
    return "does not decode"
  return "over the pixel limit" if int(height) * int(width) > max_pixels else "does not decode"


def views(samples: Sequence[Sample], image_size: int, view: image_preparation.Preprocessing,
          batch_size: int, max_pixels: int = preprocessing.MAX_IMAGE_PIXELS
          ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(indices into `samples` int64 [b], evaluation views uint8 [b, S, S, 3]) in batches of at
  most `batch_size`, in order; the samples whose image does not decode or declares more than
  `max_pixels` pixels are left out."""
  @tf.autograph.experimental.do_not_convert
  def view_of(index, image_bytes):
    return index, preprocessing.eval_image(image_bytes, image_size, view.resize_mode,
                                           view.interpolation, max_pixels)

  images = tf.data.Dataset.from_generator(
      lambda: ((index, sample.image) for index, sample in enumerate(samples)),
      output_signature=(tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.string)))
  dataset = (images.map(view_of, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
             .ignore_errors().batch(batch_size).prefetch(2))
  for indices, batch in dataset.as_numpy_iterator():
    yield indices, batch
