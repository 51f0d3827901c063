"""Data sources: where the (image, captions) records come from.

Every source but the synthetic one is a resumable record stream (`input_pipeline.streams`) built by
`create_stream(data, process_index=, process_count=)`; the pipeline decodes, augments, tokenises
and batches the records of all of them in the same way. The synthetic source renders images in
the graph from sample indices instead (`synthetic.examples`).

`data.name="mixture"` draws from several sources with weights: `data.sources` maps a name to each
source's settings (its `name`, `weight` and keys, merged over the shared ones by settings.parse).
"""

from __future__ import annotations

from typing import Callable

from clip_jax import settings
from input_pipeline import streams
from input_pipeline.sources import csv_table
from input_pipeline.sources import tfds_datasets
from input_pipeline.sources import tfrecord
from input_pipeline.sources import webdataset

StreamFactory = Callable[..., streams.Stream]

# settings.STREAM_SOURCES, in its order.
STREAM_SOURCES: dict[str, StreamFactory] = {
    "webdataset": webdataset.create_stream,
    "tfrecord": tfrecord.create_stream,
    "tfds": tfds_datasets.create_stream,
    "csv": csv_table.create_stream,
}


def create_stream(data: settings.Data, *, process_index: int, process_count: int) -> streams.Stream:
  """The record stream of this process for a stream source or a mixture of them."""
  if data.name != "mixture":
    return STREAM_SOURCES[data.name](data, process_index=process_index,
                                     process_count=process_count)
  # By name, so that the position's layout does not depend on the mapping's order.
  parts = [data.sources[name] for name in sorted(data.sources)]
  return streams.MixedStream(
      [create_stream(part, process_index=process_index, process_count=process_count)
       for part in parts], [part.weight for part in parts], seed=data.seed)
