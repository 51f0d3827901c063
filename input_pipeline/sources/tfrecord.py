"""TFRecord files of tf.train.Example, as img2dataset's `--output_format tfrecord` writes them.

The image bytes and the caption are the features `data.tfrecord.image_feature` (default "jpg")
and `data.tfrecord.caption_feature` (default "txt"); a caption feature may hold several captions.

The records are read here rather than by tf.data.TFRecordDataset because exact resuming needs each
record's byte offset, which TFRecordDataset does not report. The format is a length, its CRC, the
data and its CRC; CRCs are not checked (a damaged record fails to parse and is skipped).
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from typing import Iterator

from absl import logging
from google.protobuf import message
import tensorflow as tf

from clip_jax import settings
from input_pipeline import streams
from input_pipeline.sources import file_lists



@dataclasses.dataclass(frozen=True, kw_only=True)
class TFRecord:
  """data.tfrecord.*: the files, and the features holding the image and the captions."""
  files: str | tuple[str, ...] = file_lists.files_setting()
  image_feature: str = settings.setting("jpg", settings.TEXT)  # img2dataset's features
  caption_feature: str = settings.setting("txt", settings.TEXT)


IMAGE_FEATURE = TFRecord().image_feature
CAPTION_FEATURE = TFRecord().caption_feature
_LENGTH_AND_CRC = 12  # uint64 length, uint32 masked CRC of the length
_DATA_CRC = 4


def read_tfrecord(path: str, offset: int, image_feature: str = IMAGE_FEATURE,
                  caption_feature: str = CAPTION_FEATURE
                  ) -> Iterator[tuple[streams.Record, int]]:
  """(record, byte offset of the next record) for each Example from byte `offset` of a file."""
  with tf.io.gfile.GFile(path, "rb") as file:
    file.seek(offset)
    while header := file.read(_LENGTH_AND_CRC):
      length = struct.unpack("<Q", header[:8])[0] if len(header) == _LENGTH_AND_CRC else -1
      data = file.read(length) if length >= 0 else b""
      if length < 0 or len(data) < length or len(file.read(_DATA_CRC)) < _DATA_CRC:
        logging.warning("%s is truncated at byte %d; reading stops there.", path, offset)
        return
      offset += _LENGTH_AND_CRC + length + _DATA_CRC
      yield _parse(data, image_feature, caption_feature), offset


def _parse(data: bytes, image_feature: str, caption_feature: str) -> streams.Record:
  try:
    features = tf.train.Example.FromString(data).features.feature
  except message.DecodeError:
    return streams.make_record(b"", [])
  images = features[image_feature].bytes_list.value if image_feature in features else []
  captions = features[caption_feature].bytes_list.value if caption_feature in features else []
  return streams.make_record(images[0] if images else b"", list(captions))


def create_stream(data: settings.Data, *, process_index: int, process_count: int) -> streams.Stream:
  read_file = functools.partial(read_tfrecord, image_feature=data.source.image_feature,
                                caption_feature=data.source.caption_feature)
  return file_lists.file_stream(data, read_file, process_index=process_index,
                                process_count=process_count)


settings.SOURCES.register(settings.SourceKind(
    name="tfrecord", keys=TFRecord, check=file_lists.require_files("TFRecord"),
    create_stream=create_stream))
