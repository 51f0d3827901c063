"""WebDataset tar shards, read directly: the format of img2dataset, LAION and DataComp.

A sample is the run of consecutive tar members sharing a key, the member name up to the first dot of
its base name: `000123.jpg`, `000123.txt`, `000123.json` form sample `000123`. The image is the
first member with one of `data.webdataset.image_extensions`, the caption the
`data.webdataset.caption_extension` member. A sample without an image or a caption is kept as a
record with that part empty, so the pipeline skips and counts it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator, Sequence

from absl import logging
import tensorflow as tf

from clip_jax import settings
from input_pipeline import streams
from input_pipeline.sources import file_lists



@dataclasses.dataclass(frozen=True, kw_only=True)
class WebDataset:
  """data.webdataset.*: the shards, and which members of a sample are its image and caption."""
  # A brace pattern, a glob or a list of paths (local or gs://).
  files: str | tuple[str, ...] = file_lists.files_setting()
  image_extensions: tuple[str, ...] = settings.setting(("jpg", "jpeg", "png", "webp"), (
      lambda value: isinstance(value, tuple) and value and all(map(settings.is_text, value)),
      "a tuple of file extensions, the first present is used"))  # img2dataset's
  caption_extension: str = settings.setting("txt", settings.TEXT)
  # A tar member of more bytes is passed over unread; its sample is then skipped and counted.
  max_member_bytes: int = settings.setting(settings.MAX_MEMBER_BYTES, settings.POSITIVE_COUNT)


_DEFAULTS = WebDataset()  # read_tar's defaults: the settings'.
MAX_MEMBER_BYTES = _DEFAULTS.max_member_bytes  # a member above it is skipped unread


def split_member_name(name: str) -> tuple[str, str]:
  """'dir/000123.tar.jpg' -> ('dir/000123', 'tar.jpg'): WebDataset's key and extension."""
  directory, slash, base = name.rpartition("/")
  stem, _, extension = base.partition(".")
  return directory + slash + stem, extension.lower()


def read_samples(path: str, offset: int = 0, max_member_bytes: int = MAX_MEMBER_BYTES
                 ) -> Iterator[tuple[str, dict[str, bytes], int]]:
  """(key, {extension: bytes}, byte offset of the next sample) for each sample of a tar file,
  from byte `offset`: 0 or an offset this function returned, the start of a sample's first
  header. Members that are not regular files or hold more than `max_member_bytes` are left out
  unread, with one warning per shard (a sample without its image is then skipped and counted; a
  sample of such members only is given with no members). A damaged tar ends the shard there,
  with a warning."""
  skipped = []  # names of the members left unread
  with _open(path) as file:
    file.seek(offset)
    key, members = None, {}
    try:
      for name, data, header_offset, end in _tar_files(file, offset, max_member_bytes):
        member_key, extension = split_member_name(name)
        if member_key != key and key is not None:
          yield key, members, header_offset
          members = {}
        key = member_key
        if data is None:
          skipped.append(name)
        else:
          members[extension] = data
    except _DamagedTar as error:  # a truncated download, a damaged block
      logging.warning("%s: %s; reading of this shard stops there.", path, error)
      if error.name is not None and split_member_name(error.name)[0] != key and key is not None:
        yield key, members, error.header_offset  # the damage starts the next sample
      return
    finally:  # also when the reader stops early
      if skipped:
        logging.warning("%s: %d members skipped unread (not regular files, or more than "
                        "data.webdataset.max_member_bytes=%d bytes), the first %s.", path,
                        len(skipped), max_member_bytes, skipped[0])
    if key is not None:
      yield key, members, end


class _DamagedTar(Exception):
  """Damage at the header at `header_offset`, of the member `name` where it could be read."""

  def __init__(self, message: str, header_offset: int, name: str | None = None):
    super().__init__(message)
    self.header_offset = header_offset
    self.name = name


_CHUNK = 1 << 20  # bytes read at once


def _open(path: str):
  """A buffered binary file: Python's own for local paths (its reads copy once, without the
  GIL), a GFile read in large chunks for the others (gs://...)."""
  if "://" not in path:
    return open(path, "rb", buffering=_CHUNK)  # pylint: disable=consider-using-with
  return _ChunkedReader(tf.io.gfile.GFile(path, "rb"))


class _ChunkedReader:
  """Reads a GFile in large chunks: each GFile read costs ~20 us, tar members are a few kB."""

  def __init__(self, file):
    self._file = file
    self._buffer = b""
    self._position = 0

  def __enter__(self):
    return self

  def __exit__(self, *exception):
    self._file.close()

  def seek(self, offset: int) -> None:
    self._file.seek(offset)
    self._buffer, self._position = b"", 0

  def read(self, size: int) -> bytes:
    end = self._position + size
    if end > len(self._buffer):
      missing = end - len(self._buffer)
      self._buffer = self._buffer[self._position:] + self._file.read(max(missing, _CHUNK))
      self._position, end = 0, size
    data = self._buffer[self._position:end]
    self._position = min(end, len(self._buffer))
    return data


_BLOCK = 512
_REGULAR_FILES = (b"0", b"\0", b"7")  # regular, old-style regular, contiguous
_EXTENDED_HEADERS = (b"x", b"g", b"L")  # POSIX pax (one member, global), GNU long name
_DIRECTORY = b"5"
_MAX_EXTENDED_HEADER_BYTES = 1 << 20  # a pax or long-name header: a name and a few fields


def _tar_files(file, offset: int, max_member_bytes: int = MAX_MEMBER_BYTES
               ) -> Iterator[tuple[str, bytes | None, int, int]]:
  """(name, data, offset of its first header, offset after it) of each member of a tar stream
  read from byte `offset` but directories; data is None for the members left unread: those that
  are not regular files or hold more than `max_member_bytes`.

  A minimal reader of ustar, pax and GNU tars (what tarfile, GNU tar and webdataset write),
  several times faster than `tarfile` in stream mode, which parses each header into a TarInfo and
  copies data through a file object. Directories, links, devices, GNU sparse files and members
  above the limit are skipped without holding their data: memory stays bounded whatever a
  shard's headers claim.
  """
  first_header, pax_name, long_name = offset, None, None
  while True:
    header = file.read(_BLOCK)
    if not header or header.count(0) == _BLOCK:  # the end-of-archive blocks, or a clean end
      return
    if len(header) < _BLOCK or not _checksum_matches(header):
      raise _DamagedTar(f"a damaged header at byte {offset}", first_header)
    size = _header_number(header[124:136])
    padded = -(-size // _BLOCK) * _BLOCK
    kind = header[156:157]
    name = pax_name or long_name or _header_name(header)
    if kind in _EXTENDED_HEADERS and size > _MAX_EXTENDED_HEADER_BYTES or size < 0:
      raise _DamagedTar(f"a header at byte {offset} claims {size} bytes", first_header)
    wanted = kind in _EXTENDED_HEADERS or (kind in _REGULAR_FILES and size <= max_member_bytes)
    data = file.read(padded) if wanted else b""
    if (len(data) if wanted else _skip(file, padded)) < padded:
      raise _DamagedTar(f"a member cut short after byte {offset}", first_header,
                        name.decode("utf-8", "surrogateescape") if kind in _REGULAR_FILES else None)
    offset += _BLOCK + padded
    data = data[:size]
    if kind in _EXTENDED_HEADERS:
      if kind == b"L":
        long_name = data.split(b"\0", 1)[0]
      elif kind == b"x":
        pax_name = _pax_path(data)
      continue
    if wanted or kind != _DIRECTORY:
      yield (name.decode("utf-8", "surrogateescape"), data if wanted else None, first_header,
             offset)
    first_header, pax_name, long_name = offset, None, None


def _skip(file, count: int) -> int:
  """Reads past `count` bytes 64 KiB at a time (reading, unlike seeking, finds a shard's end);
  returns the bytes there were."""
  skipped = 0
  while skipped < count:
    chunk = file.read(min(1 << 16, count - skipped))
    if not chunk:
      break
    skipped += len(chunk)
  return skipped


def _checksum_matches(header: bytes) -> bool:
  try:
    stored = _header_number(header[148:156])
  except ValueError:
    return False
  return stored == sum(header) - sum(header[148:156]) + 8 * 32  # the field counts as spaces


def _header_number(field: bytes) -> int:
  """An octal field, or GNU's base-256 for large values (first byte 0x80 or 0xff)."""
  if field[0] & 0x80:
    value = int.from_bytes(field[1:], "big")
    return value - (1 << (8 * len(field) - 8)) if field[0] == 0xff else value
  digits = field.split(b"\0", 1)[0].strip()
  return int(digits, 8) if digits else 0


def _header_name(header: bytes) -> bytes:
  name = header[:100].split(b"\0", 1)[0]
  prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
  return prefix + b"/" + name if prefix else name


def _pax_path(data: bytes) -> bytes | None:
  """The "path" of a pax header's "LENGTH key=value\\n" records, if it has one."""
  path, position = None, 0
  while position < len(data):
    length, _, rest = data[position:position + 20].partition(b" ")
    if not length.isdigit():
      break
    record = data[position:position + int(length)]
    key, _, value = record[len(length) + 1:-1].partition(b"=")
    if key == b"path":
      path = value
    position += int(length)
  return path


def read_tar(path: str, offset: int,
             image_extensions: Sequence[str] = _DEFAULTS.image_extensions,
             caption_extension: str = _DEFAULTS.caption_extension,
             max_member_bytes: int = MAX_MEMBER_BYTES) -> Iterator[tuple[streams.Record, int]]:
  """(record, byte offset of the next sample) for each sample from byte `offset` of a tar file
  (see `read_samples`)."""
  for _, members, next_offset in read_samples(path, offset, max_member_bytes):
    yield _record(members, image_extensions, caption_extension), next_offset


def _record(members: dict[str, bytes], image_extensions, caption_extension) -> streams.Record:
  image = next((members[extension] for extension in image_extensions if extension in members),
               b"")
  captions = [members[caption_extension]] if caption_extension in members else []
  return streams.make_record(image, captions)


def create_stream(data: settings.Data, *, process_index: int, process_count: int) -> streams.Stream:
  keys = data.source
  read_file = functools.partial(read_tar, image_extensions=keys.image_extensions,
                                caption_extension=keys.caption_extension,
                                max_member_bytes=keys.max_member_bytes)
  return file_lists.file_stream(data, read_file, process_index=process_index,
                                process_count=process_count)


settings.SOURCES.register(settings.SourceKind(
    name="webdataset", keys=WebDataset, check=file_lists.require_files("tar"),
    create_stream=create_stream))
