"""Data sources: where the (image, caption) examples come from.

A source is a function `(data_config, indices) -> tf.data.Dataset`: given a dataset of int64
sample indices, it yields one example per index, in the same order, each a dict with at least
'image' (uint8 [H, W, 3]) and 'caption' (string). Because the caller chooses the indices,
sharding over processes and resuming are done once, in `input_pipeline.create_dataset`, for every
source; preprocessing, tokenising and batching are shared too.
"""

from typing import Callable

import ml_collections
import tensorflow as tf

from input_pipeline.sources import synthetic

Source = Callable[[ml_collections.ConfigDict, tf.data.Dataset], tf.data.Dataset]

SOURCES: dict[str, Source] = {
    "synthetic": synthetic.examples,
}


def get_source(name: str) -> Source:
  if name not in SOURCES:
    raise ValueError(f"data.name={name!r} is unknown; allowed: {', '.join(SOURCES)}.")
  return SOURCES[name]
