"""A data source defined outside clip_jax and registered as a plug-in (docs/extending.md): a JSON
Lines file of {"image": <path>, "caption": <text>} objects, one per line. Its keys are its own
section, data.jsonl.*; it is a resumable stream of one record per line, so the pipeline decodes,
augments, shuffles, resumes and mixes it like a built-in source. tests/test_extending.py trains
on it; `model.plugins=("plugin_source",)` imports this module wherever the run's config is
parsed."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterator

from clip_jax import settings
from input_pipeline import streams


@dataclasses.dataclass(frozen=True, kw_only=True)
class JsonLines:
  """data.jsonl.*: the file, and the keys of each object holding the image path and caption."""
  file: str = settings.setting("", settings.TEXT)
  image_key: str = settings.setting("image", settings.TEXT)
  caption_key: str = settings.setting("caption", settings.TEXT)


def read_line(row: tuple[str, str], offset: int) -> Iterator[tuple[streams.Record, int]]:
  """A row's one record (offset 0), or nothing (offset 1: already read)."""
  if offset:
    return
  image_path, caption = row
  with open(image_path, "rb") as file:
    image = file.read()
  yield streams.make_record(image, [caption.encode("utf-8")]), 1


def create_stream(data: settings.Data, *, process_index: int, process_count: int) -> streams.Stream:
  keys: JsonLines = data.source
  directory = os.path.dirname(keys.file)
  with open(keys.file) as file:
    rows = [(os.path.join(directory, item[keys.image_key]), item[keys.caption_key])
            for item in map(json.loads, filter(str.strip, file))]
  return streams.sharded_stream(data, rows, read_line, process_index=process_index,
                                process_count=process_count,
                                description=f"data.jsonl.file={keys.file!r}")


KIND = settings.SOURCES.register(settings.SourceKind(
    name="jsonl", keys=JsonLines, create_stream=create_stream,
    check=settings.require("file", "the path of a JSON Lines file")))
