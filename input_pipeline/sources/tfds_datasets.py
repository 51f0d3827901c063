"""TFDS datasets of images and captions (`coco_captions` with several captions per image...).

Each process reads its even slice of `data.split` (split slicing such as "train[:90%]" works), in
TFDS's fixed order, shuffled in windows by the stream; images stay encoded until the pipeline
decodes them. `data.caption_feature` is a path into the example ("captions/text" for COCO); a
sequence of captions gives one, drawn afresh each epoch.

`data.mock_examples=N` reads N random examples of the dataset's features instead of its files
(`tfds.testing.mock_data`): to try a config, or the pipeline, where the data is not at hand.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from clip_jax import settings
from input_pipeline import streams

# The features read where data.image_feature and data.caption_feature are "" (COCO's layout).
IMAGE_FEATURE = "image"
CAPTION_FEATURE = "captions/text"


def feature(example: dict[str, Any], path: str):
  """The feature at a "/"-separated path of nested features, e.g. "captions/text"."""
  for part in path.split("/"):
    example = example[part]
  return example


def create_stream(data: settings.Data, *, process_index: int, process_count: int) -> streams.Stream:
  def maybe_mocked():
    if data.mock_examples:
      return tfds.testing.mock_data(num_examples=data.mock_examples)
    return contextlib.nullcontext()

  with maybe_mocked():
    builder = tfds.builder(data.dataset, data_dir=data.data_dir or None)
  image_feature = data.image_feature or IMAGE_FEATURE
  caption_feature = data.caption_feature or CAPTION_FEATURE
  process_split = tfds.even_splits(data.split, n=process_count)[process_index]

  def read_split(split, offset) -> Iterator[tuple[streams.Record, int]]:
    with maybe_mocked():
      examples = builder.as_dataset(split=split, shuffle_files=False,
                                    decoders={image_feature: tfds.decode.SkipDecoding()})
    for number, example in enumerate(examples.skip(offset).as_numpy_iterator(), offset + 1):
      captions = np.asarray(feature(example, caption_feature), dtype=object).reshape(-1)
      yield streams.make_record(feature(example, image_feature), list(captions)), number

  return streams.sharded_stream(
      data, [process_split], read_split, process_index=0, process_count=1,
      description=f"data.dataset={data.dataset!r}, data.split={data.split!r}",
      identity=[builder.info.full_name, data.split])
