"""TFDS datasets of images and captions (`coco_captions` with several captions per image...).

Each process reads its even slice of `data.tfds.split` (split slicing such as "train[:90%]"
works), in TFDS's fixed order, shuffled in windows by the stream; images stay encoded until the
pipeline decodes them. `data.tfds.caption_feature` is a path into the example ("captions/text" for
COCO); a sequence of captions gives one, drawn afresh each epoch.

`data.tfds.mock_examples=N` reads N random examples of the dataset's features instead of its files
(`tfds.testing.mock_data`): to try a config, or the pipeline, where the data is not at hand.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from clip_jax import settings
from input_pipeline import streams



@dataclasses.dataclass(frozen=True, kw_only=True)
class TFDS:
  """data.tfds.*: a dataset, its split (slicing works: "train[:90%]") and data_dir ("" for TFDS's
  default); mock_examples=N trains on N random examples of its features. A feature is a path
  into the example (COCO's layout by default)."""
  dataset: str = settings.setting("", settings.TEXT)
  split: str = settings.setting("train", settings.TEXT)
  data_dir: str = settings.setting("", settings.TEXT)
  mock_examples: int = settings.setting(0, settings.COUNT)
  image_feature: str = settings.setting("image", settings.TEXT)
  caption_feature: str = settings.setting("captions/text", settings.TEXT)


CAPTION_FEATURE = TFDS().caption_feature


def feature(example: dict[str, Any], path: str):
  """The feature at a "/"-separated path of nested features, e.g. "captions/text"."""
  for part in path.split("/"):
    example = example[part]
  return example


def create_stream(data: settings.Data, *, process_index: int, process_count: int) -> streams.Stream:
  keys: TFDS = data.source
  def maybe_mocked():
    if keys.mock_examples:
      return tfds.testing.mock_data(num_examples=keys.mock_examples)
    return contextlib.nullcontext()

  with maybe_mocked():
    builder = tfds.builder(keys.dataset, data_dir=keys.data_dir or None)
  image_feature, caption_feature = keys.image_feature, keys.caption_feature
  process_split = tfds.even_splits(keys.split, n=process_count)[process_index]

  def read_split(split, offset) -> Iterator[tuple[streams.Record, int]]:
    with maybe_mocked():
      examples = builder.as_dataset(split=split, shuffle_files=False,
                                    decoders={image_feature: tfds.decode.SkipDecoding()})
    for number, example in enumerate(examples.skip(offset).as_numpy_iterator(), offset + 1):
      captions = np.asarray(feature(example, caption_feature), dtype=object).reshape(-1)
      yield streams.make_record(feature(example, image_feature), list(captions)), number

  return streams.sharded_stream(
      data, [process_split], read_split, process_index=0, process_count=1,
      description=f"data.tfds.dataset={keys.dataset!r}, data.tfds.split={keys.split!r}",
      identity=[builder.info.full_name, keys.split])


settings.SOURCES.register(settings.SourceKind(
    name="tfds", keys=TFDS, check=settings.require("dataset", "a TFDS dataset name"),
    create_stream=create_stream))
