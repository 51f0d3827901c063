"""A CSV/TSV table of image paths and captions, like open_clip's `--dataset-type csv`.

Every row is a shard of one record, so the per-epoch shard permutation shuffles the whole table
and each process reads every P-th row of it. Relative image paths are relative to the table's
directory. A row whose image cannot be read, or whose caption is empty, is skipped and counted.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Iterator, NamedTuple

import tensorflow as tf

from clip_jax import settings
from input_pipeline import streams



@dataclasses.dataclass(frozen=True, kw_only=True)
class CSV:
  """data.csv.*: a table of image paths and captions (open_clip's --dataset-type csv layout)."""
  file: str = settings.setting("", settings.TEXT)
  separator: str = settings.setting("\t", settings.TEXT)
  image_column: str = settings.setting("filepath", settings.TEXT)
  caption_column: str = settings.setting("title", settings.TEXT)


_DEFAULTS = CSV()  # read_table's defaults: the settings'.

Row = tuple[str, str]  # (image path, caption)


class Keys(NamedTuple):
  """What the user calls the table's settings, for error messages."""
  file: str = "data.csv.file"
  separator: str = "data.csv.separator"
  image_column: str = "data.csv.image_column"
  caption_column: str = "data.csv.caption_column"


class TableRow(NamedTuple):
  line: int  # Where the row ends in the file, counting from 1 (the header).
  image_path: str  # Resolved against the table's directory; "" if the row has none.
  caption: str | None  # Stripped; None if the row is too short to have one.


def read_table(path: str, separator: str = _DEFAULTS.separator,
               image_column: str = _DEFAULTS.image_column,
               caption_column: str = _DEFAULTS.caption_column, keys: Keys = Keys()) -> list[Row]:
  """(image path, caption) of every row; a missing image path or caption is ""."""
  return [(row.image_path, row.caption or "")
          for row in read_table_rows(path, separator, image_column, caption_column, keys)]


def read_table_rows(path: str, separator: str = _DEFAULTS.separator,
                    image_column: str = _DEFAULTS.image_column,
                    caption_column: str = _DEFAULTS.caption_column,
                    keys: Keys = Keys()) -> Iterator[TableRow]:
  """The rows of `read_table` with their line numbers, telling a missing caption from an empty one.

  The header may start with a byte order mark (as spreadsheets write UTF-8). Relative image paths
  are relative to the table's directory; absolute ones and URLs (gs://...) are kept as they are.
  """
  with tf.io.gfile.GFile(path, "rb") as file:
    data = file.read()
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as error:
    line = data.count(b"\n", 0, error.start) + 1
    raise ValueError(f"{keys.file}={path}, line {line}: not UTF-8 ({error.reason} at byte "
                     f"{error.start}); save the table as UTF-8.") from None
  reader = csv.DictReader(io.StringIO(text), delimiter=separator)
  fieldnames = [name.lstrip("\ufeff") for name in reader.fieldnames or ()]
  reader.fieldnames = fieldnames
  for key, column in ((keys.image_column, image_column), (keys.caption_column, caption_column)):
    if column not in fieldnames:
      raise ValueError(f"{key}={column!r} is not a column of {keys.file}={path}; allowed: "
                       f"{', '.join(fieldnames)} ({keys.separator}={separator!r}).")
  directory = os.path.dirname(path)
  for row in reader:
    image_path, caption = (row[image_column] or "").strip(), row[caption_column]
    yield TableRow(reader.line_num, _resolve(image_path, directory) if image_path else "",
                   caption.strip() if caption is not None else None)


def _resolve(path: str, directory: str) -> str:
  if os.path.isabs(path) or "://" in path:
    return path
  return os.path.join(directory, path)


def read_row(row: Row, offset: int) -> Iterator[tuple[streams.Record, int]]:
  """The row's one record (offset 0), or nothing (offset 1: already read)."""
  if offset:
    return
  image_path, caption = row
  try:
    with tf.io.gfile.GFile(image_path, "rb") as file:
      image = file.read()
  except (tf.errors.OpError, OSError):  # missing or unreadable: skipped and counted downstream
    image = b""
  yield streams.make_record(image, [caption.encode("utf-8")]), 1


def create_stream(data: settings.Data, *, process_index: int, process_count: int) -> streams.Stream:
  keys: CSV = data.source
  rows = read_table(keys.file, keys.separator, keys.image_column, keys.caption_column)
  return streams.sharded_stream(data, rows, read_row, process_index=process_index,
                                process_count=process_count,
                                description=f"data.csv.file={keys.file!r}")


settings.SOURCES.register(settings.SourceKind(
    name="csv", keys=CSV, check=settings.require("file", "the path of a CSV/TSV table"),
    create_stream=create_stream))
