"""WebDataset tar shards, read directly: the format of img2dataset, LAION and DataComp.

A sample is the run of consecutive tar members sharing a key, the member name up to the first
dot of its base name: `000123.jpg`, `000123.txt`, `000123.json` form sample `000123`. The image is
the first member with one of `data.image_extensions`, the caption the `data.caption_extension`
member. A sample without an image or a caption is kept as a record with that part empty, so the
pipeline skips and counts it.
"""

from __future__ import annotations

import functools
import posixpath
import tarfile
from typing import Iterator, Sequence

from absl import logging
import tensorflow as tf

from clip_jax import settings
from input_pipeline import streams
from input_pipeline.sources import file_lists

_DEFAULTS = settings.Data()  # read_tar's defaults: the settings' (img2dataset's extensions).


def split_member_name(name: str) -> tuple[str, str]:
  """'dir/000123.tar.jpg' -> ('dir/000123', 'tar.jpg'): WebDataset's key and extension."""
  directory, base = posixpath.split(name)
  stem, _, extension = base.partition(".")
  return posixpath.join(directory, stem), extension.lower()


def read_samples(path: str, offset: int = 0
                 ) -> Iterator[tuple[str, dict[str, bytes], int]]:
  """(key, {extension: bytes}, byte offset of the next sample) for each sample of a tar file,
  from byte `offset`: 0 or an offset this function returned, the start of a sample's first
  header. A damaged tar ends the shard there, with a warning."""
  with tf.io.gfile.GFile(path, "rb") as file:
    file.seek(offset)
    key, members = None, {}
    try:
      with tarfile.open(fileobj=file, mode="r|") as archive:  # a stream: no seeking back
        for member in archive:
          if not member.isfile():
            continue
          member_key, extension = split_member_name(member.name)
          if member_key != key and members:
            yield key, members, offset + member.offset
            members = {}
          key = member_key
          members[extension] = archive.extractfile(member).read()
        end = offset + archive.offset
    except tarfile.TarError as error:  # a truncated download, a damaged block
      logging.warning("%s: %s after byte %d; reading of this shard stops there.", path, error,
                      offset)
      return
    if members:
      yield key, members, end


def read_tar(path: str, offset: int,
             image_extensions: Sequence[str] = _DEFAULTS.image_extensions,
             caption_extension: str = _DEFAULTS.caption_extension
             ) -> Iterator[tuple[streams.Record, int]]:
  """(record, byte offset of the next sample) for each sample from byte `offset` of a tar file
  (see `read_samples`)."""
  for _, members, next_offset in read_samples(path, offset):
    yield _record(members, image_extensions, caption_extension), next_offset


def _record(members: dict[str, bytes], image_extensions, caption_extension) -> streams.Record:
  image = next((members[extension] for extension in image_extensions if extension in members),
               b"")
  captions = [members[caption_extension]] if caption_extension in members else []
  return streams.make_record(image, captions)


def create_stream(data: settings.Data, *, process_index: int, process_count: int) -> streams.Stream:
  read_file = functools.partial(read_tar, image_extensions=data.image_extensions,
                                caption_extension=data.caption_extension)
  return file_lists.file_stream(data, read_file, process_index=process_index,
                                process_count=process_count)
