"""Shard lists (`data.<source>.files`): brace patterns, globs or explicit lists, on any tf.io.gfile
path."""

from __future__ import annotations

from typing import Sequence

import braceexpand
import tensorflow as tf

from clip_jax import settings
from input_pipeline import streams

_GLOB_CHARACTERS = frozenset("*?[")


def files_setting():
  """The `files` key of a source that reads a list of shards."""
  return settings.setting("", (
      lambda value: settings.is_text(value) or (
          isinstance(value, tuple) and all(map(settings.is_text, value))),
      "a brace pattern, a glob or a list of paths"))


def require_files(kind: str):
  """A source's check that its files are named."""
  return settings.require("files", f"a brace pattern, a glob or a list of {kind} files")


def expand(files: str | Sequence[str], key: str = "files") -> list[str]:
  """Every file named by `files`, in order: "/d/{00000..01023}.tar", "gs://b/*.tfrecord", a list.

  Brace patterns keep their order; glob matches are sorted. A pattern that names no existing
  file is an error, so a typo never trains on a fraction of the data.
  """
  patterns = [files] if isinstance(files, str) else list(files)
  if not patterns or not all(patterns):
    raise ValueError(f"{key} is empty; allowed: a brace pattern, a glob or a list of paths.")
  paths = []
  for pattern in patterns:
    for expanded in braceexpand.braceexpand(pattern):
      if _GLOB_CHARACTERS & set(expanded):
        matches = sorted(tf.io.gfile.glob(expanded))
        if not matches:
          raise ValueError(f"{key}: no file matches {expanded!r}.")
        paths.extend(matches)
      elif tf.io.gfile.exists(expanded):
        paths.append(expanded)
      else:
        raise ValueError(f"{key}: {expanded!r} does not exist.")
  return paths


def file_stream(data: settings.Data, read_file: streams.ReadShard, *, process_index: int,
                process_count: int) -> streams.Stream:
  """The stream over the files of `data.<source>.files`, each read by `read_file(path, offset)`."""
  key = f"data.{data.name}.files"
  return streams.sharded_stream(data, expand(data.source.files, key), read_file,
                                process_index=process_index, process_count=process_count,
                                description=f"{key}={data.source.files!r}")
