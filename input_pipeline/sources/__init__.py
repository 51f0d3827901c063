"""Data sources: where the (image, captions) records come from.

Each source registers itself (`settings.SOURCES`) with the record of its own settings section,
data.<name>.*. Every source but the synthetic one is a resumable record stream
(`input_pipeline.streams`) built by `create_stream(data, process_index=, process_count=)`; the
pipeline decodes, augments, tokenises and batches the records of all of them in the same way. The
synthetic source renders images in the graph from sample indices instead (`synthetic.examples`).

`data.name="mixture"` draws from several sources with weights: `data.sources` maps a name to each
source's settings (its `name`, `weight`, its own section and the shared keys that differ, merged
over the shared ones by settings.parse).
"""

from __future__ import annotations


from clip_jax import settings
from input_pipeline import streams
# The built-in sources, which register themselves as they are imported: in this order, which
# error messages list them in.
from input_pipeline.sources import synthetic  # noqa: F401
from input_pipeline.sources import webdataset  # noqa: F401
from input_pipeline.sources import tfrecord  # noqa: F401
from input_pipeline.sources import tfds_datasets  # noqa: F401
from input_pipeline.sources import csv_table  # noqa: F401

MIXTURE = "mixture"
# A mixture has no section of its own: its parts are data.sources.
settings.SOURCES.register(settings.SourceKind(name=MIXTURE))


def create_stream(data: settings.Data, *, process_index: int, process_count: int) -> streams.Stream:
  """The record stream of this process for a stream source or a mixture of them."""
  if data.name != MIXTURE:
    return settings.SOURCES.get(data.name, "data.name").create_stream(
        data, process_index=process_index, process_count=process_count)
  # By name, so that the position's layout does not depend on the mapping's order.
  parts = [data.sources[name] for name in sorted(data.sources)]
  return streams.MixedStream(
      [create_stream(part, process_index=process_index, process_count=process_count)
       for part in parts], [part.weight for part in parts], seed=data.seed)
