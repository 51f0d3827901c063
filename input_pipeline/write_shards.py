"""Writes image-caption pairs as WebDataset or TFRecord shards, laid out as img2dataset writes them.

LAION and DataComp come as img2dataset's shards; writing local data (a CSV of image paths and
captions, or a folder of images with caption sidecars) in the same layout lets one source read
both, and gives tests and benchmarks real shards. `--synthetic=N` writes N samples of the built-in
synthetic dataset, to try the real-data path end to end on a machine without data.

  python -m input_pipeline.write_shards --csv=train.tsv --output_dir=/data/shards
  python -m input_pipeline.write_shards --image_folder=photos/ --output_dir=gs://bucket/shards
  python -m input_pipeline.write_shards --synthetic=2000 --output_dir=/tmp/shards --format=tfrecord

Layout: `output_dir/00000.tar, 00001.tar, ...` (`--format=webdataset`) or `00000.tfrecord, ...`
(`--format=tfrecord`), `samples_per_shard` samples each (the last may hold fewer). In a tar file a
sample is three consecutive members sharing a key, in the order webdataset's TarWriter (so
img2dataset) writes them, sorted by extension:
  {key}.jpg|png|webp  the image file's bytes, unchanged (".jpeg" is named ".jpg", as in img2dataset)
  {key}.json          {"key", "caption", "source_path" (where it came from)} and metadata given
  {key}.txt           the caption, UTF-8
In a TFRecord file a sample is a tf.train.Example with the same parts as bytes features "jpg",
"json", "txt" and "key". The image feature is "jpg" whatever the image's format, as img2dataset
names it after its default encoding and tfrecord.py reads it by default; decoders sniff the format.
The key is img2dataset's: the shard number (5 digits) then the index in the shard (as many digits
as samples_per_shard - 1 has), e.g. 000120042. Tar headers carry mtime 0, uid/gid 0 and no user
names, so the same input always gives the same bytes.
"""

from __future__ import annotations

import collections
import io
import json
import os
import tarfile
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Protocol

from absl import app
from absl import flags
from absl import logging
import numpy as np
from PIL import Image
import tensorflow as tf

from clip_jax import settings
from input_pipeline.sources import csv_table
from input_pipeline.sources import synthetic

# What img2dataset and open_clip's webdataset loader accept; ".jpeg" is written as ".jpg".
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
SHARD_DIGITS = 5  # img2dataset's default: 00000.tar.
MAX_EXAMPLES = 3  # Paths shown per reason when reporting skipped inputs.
JPEG_QUALITY = 95  # Of the synthetic images: img2dataset's default.
CSV_KEYS = csv_table.Keys(file="--csv", separator="--csv_separator",
                          image_column="--csv_image_key", caption_column="--csv_caption_key")


class Sample(NamedTuple):
  image: bytes  # The encoded file, written unchanged.
  extension: str  # One of IMAGE_EXTENSIONS, any case.
  caption: str
  metadata: dict[str, Any] | None = None  # JSON-serialisable; goes into {key}.json.


class SkipLog:
  """Inputs that could not be used, counted by reason with a few example paths."""

  def __init__(self):
    self.counts: collections.Counter[str] = collections.Counter()
    self.examples: dict[str, list[str]] = collections.defaultdict(list)

  def add(self, reason: str, path: str) -> None:
    self.counts[reason] += 1
    if len(self.examples[reason]) < MAX_EXAMPLES:
      self.examples[reason].append(path)

  @property
  def total(self) -> int:
    return sum(self.counts.values())

  def summary(self) -> str:
    lines = [f"Skipped {self.total} input(s):"]
    for reason, count in sorted(self.counts.items()):
      lines.append(f"  {reason}: {count} (e.g. {', '.join(self.examples[reason])})")
    return "\n".join(lines)


def normalize_extension(extension: str) -> str:
  """Lower case without the dot, ".jpeg" as "jpg"; ValueError if not an image extension."""
  name = extension.lower().lstrip(".")
  if name not in IMAGE_EXTENSIONS:
    raise ValueError(f"Image extension {extension!r} is not supported; allowed: "
                     f"{', '.join(IMAGE_EXTENSIONS)}.")
  return "jpg" if name == "jpeg" else name


def shard_path(output_dir: str, shard: int, output_format: str = "webdataset") -> str:
  return os.path.join(output_dir, f"{shard:0{SHARD_DIGITS}d}.{_format(output_format).suffix}")


def shard_pattern(output_dir: str, num_shards: int, output_format: str = "webdataset") -> str:
  """The brace pattern naming shards 0..num_shards - 1, for `data.<format>.files`."""
  if num_shards < 1:
    raise ValueError(f"num_shards={num_shards}: need at least one shard.")
  if num_shards == 1:
    return shard_path(output_dir, 0, output_format)
  last = num_shards - 1
  names = f"{0:0{SHARD_DIGITS}d}..{last:0{SHARD_DIGITS}d}"
  if len(str(last)) > SHARD_DIGITS:  # Wider names past 99999: braceexpand would pad them all.
    names = f"{{{0:0{SHARD_DIGITS}d}..{10**SHARD_DIGITS - 1}}},{{{10**SHARD_DIGITS}..{last}}}"
  return os.path.join(output_dir, f"{{{names}}}.{_format(output_format).suffix}")


def _tar_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
  """A read-only regular file with fixed owner and time, so shards are reproducible."""
  info = tarfile.TarInfo(name)
  info.size, info.mtime, info.mode = len(data), 0, 0o444
  info.uid = info.gid = 0
  info.uname = info.gname = ""
  return info, io.BytesIO(data)


def _metadata_json(key: str, sample: Sample) -> bytes:
  metadata = {**(sample.metadata or {}), "key": key, "caption": sample.caption}
  return json.dumps(metadata, sort_keys=True, ensure_ascii=False).encode("utf-8")


class _ShardWriter(Protocol):
  """One shard file being written: samples go in with their keys, in order."""

  def add(self, key: str, sample: Sample) -> None:
    ...

  def close(self) -> None:
    ...


class _TarWriter:
  """One tar file, streamed through GFile (so gs:// works; GFile cannot seek, hence "w|")."""

  def __init__(self, path: str):
    self._file = tf.io.gfile.GFile(path, "wb")
    self._tar = tarfile.open(fileobj=self._file, mode="w|", format=tarfile.USTAR_FORMAT)

  def add(self, key: str, sample: Sample) -> None:
    members = {
        normalize_extension(sample.extension): bytes(sample.image),
        "txt": sample.caption.encode("utf-8"),
        "json": _metadata_json(key, sample),
    }
    for suffix in sorted(members):
      self._tar.addfile(*_tar_member(f"{key}.{suffix}", members[suffix]))

  def close(self) -> None:
    self._tar.close()
    self._file.close()


class _TFRecordWriter:
  """One TFRecord file of tf.train.Example; TFRecordWriter writes gs:// paths too."""

  def __init__(self, path: str):
    self._writer = tf.io.TFRecordWriter(path)

  def add(self, key: str, sample: Sample) -> None:
    normalize_extension(sample.extension)  # Checked as for tar files, though the name is "jpg".
    features = {
        "jpg": bytes(sample.image),
        "txt": sample.caption.encode("utf-8"),
        "key": key.encode("utf-8"),
        "json": _metadata_json(key, sample),
    }
    example = tf.train.Example(features=tf.train.Features(feature={
        name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        for name, value in features.items()}))
    self._writer.write(example.SerializeToString(deterministic=True))

  def close(self) -> None:
    self._writer.close()


class _Format(NamedTuple):
  suffix: str  # Of the shard files.
  open_writer: Callable[[str], _ShardWriter]


FORMATS = {"webdataset": _Format("tar", _TarWriter),
           "tfrecord": _Format("tfrecord", _TFRecordWriter)}


def _format(output_format: str) -> _Format:
  if output_format not in FORMATS:
    raise ValueError(f"--format={output_format!r} is not supported; allowed: "
                     f"{', '.join(FORMATS)}.")
  return FORMATS[output_format]


def write_shards(samples: Iterable[Sample | tuple], output_dir: str,
                 samples_per_shard: int = 10_000, output_format: str = "webdataset") -> list[str]:
  """Writes `samples` (Sample or plain tuples of its fields) in order; returns the shard paths."""
  if not isinstance(samples_per_shard, int) or samples_per_shard < 1:
    raise ValueError(f"samples_per_shard={samples_per_shard!r}: need an integer >= 1.")
  open_writer = _format(output_format).open_writer
  index_digits = len(str(samples_per_shard - 1))
  tf.io.gfile.makedirs(output_dir)
  paths, writer, index = [], None, 0
  try:
    for count, record in enumerate(samples):
      shard, index = divmod(count, samples_per_shard)
      if index == 0:
        if writer is not None:
          writer.close()
          logging.info("Wrote %s (%d samples).", paths[-1], samples_per_shard)
        paths.append(shard_path(output_dir, shard, output_format))
        writer = open_writer(paths[-1])
      writer.add(f"{shard:0{SHARD_DIGITS}d}{index:0{index_digits}d}", Sample(*record))
  finally:
    if writer is not None:
      writer.close()
      logging.info("Wrote %s (%d samples).", paths[-1], index + 1)
  return paths


def _read_image(path: str, skipped: SkipLog) -> tuple[bytes, str] | None:
  """(bytes, extension) of an image file, or None (recorded in `skipped`) if unusable."""
  try:
    extension = normalize_extension(os.path.splitext(path)[1])
  except ValueError:
    skipped.add("unsupported extension", path)
    return None
  try:
    with tf.io.gfile.GFile(path, "rb") as file:
      return file.read(), extension
  except tf.errors.NotFoundError:
    skipped.add("missing image file", path)
  except tf.errors.FailedPreconditionError:  # A directory.
    skipped.add("not a file", path)
  return None


def read_csv(csv_path: str, skipped: SkipLog, separator: str = "\t", image_key: str = "filepath",
             caption_key: str = "title") -> Iterator[Sample]:
  """Samples from a table of image paths and captions, as open_clip's `--dataset-type csv` reads.

  Parsed as the training pipeline's csv source parses it (relative image paths are relative to
  the table's directory). Rows without a usable image or caption are recorded in `skipped`,
  labelled by file and line.
  """
  for row in csv_table.read_table_rows(csv_path, separator, image_key, caption_key, CSV_KEYS):
    where = f"{csv_path}:{row.line}"
    if not row.image_path:
      skipped.add("missing image path", where)
    elif not row.caption:
      skipped.add("missing caption" if row.caption is None else "empty caption", where)
    elif (image := _read_image(row.image_path, skipped)) is not None:
      yield Sample(image[0], image[1], row.caption, {"source_path": row.image_path})


def read_image_folder(image_dir: str, skipped: SkipLog) -> Iterator[Sample]:
  """Samples from images under `image_dir` (recursively, in path order), captioned by `<stem>.txt`.

  Files that are neither images nor captions, and images without a non-empty caption, are
  recorded in `skipped`.
  """
  files = sorted(os.path.join(directory, name)
                 for directory, _, names in tf.io.gfile.walk(image_dir) for name in names)
  existing = set(files)
  for path in files:
    stem, extension = os.path.splitext(path)
    if extension.lower() == ".txt":
      continue
    if extension.lower().lstrip(".") not in IMAGE_EXTENSIONS:
      skipped.add("unsupported extension", path)
      continue
    caption_path = stem + ".txt"
    if caption_path not in existing:
      skipped.add("missing caption", path)
      continue
    with tf.io.gfile.GFile(caption_path, "rb") as file:
      try:
        caption = file.read().decode("utf-8").strip()
      except UnicodeDecodeError:
        skipped.add("caption not UTF-8", path)
        continue
    if not caption:
      skipped.add("empty caption", path)
      continue
    image = _read_image(path, skipped)
    if image is not None:
      yield Sample(image[0], image[1], caption, {"source_path": path})


def read_synthetic(num_samples: int, image_size: int = 64, seed: int = 0) -> Iterator[Sample]:
  """The first `num_samples` training samples of the synthetic dataset, as JPEG files."""
  world = synthetic.World.from_settings(settings.Data(seed=seed, image_size=image_size))
  for index in range(num_samples):
    sample = synthetic.render(world, "train", index)
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(sample.image)).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    colour = world.colours[sample.colour] if sample.colour != synthetic.UNCOLOURED else None
    yield Sample(buffer.getvalue(), "jpg", sample.caption, {
        "source": "synthetic", "seed": seed, "index": index, "shape": world.shapes[sample.shape],
        "colour": colour, "heldout": bool(sample.heldout)})


def _separator(value: str) -> str:
  separator = {r"\t": "\t", "tab": "\t"}.get(value, value)
  if len(separator) != 1:
    raise ValueError(fr"--csv_separator={value!r}: need one character (or '\t').")
  return separator


class _Counter:
  """Passes items through, counting them."""

  def __init__(self, items: Iterable[Any]):
    self._items = items
    self.count = 0

  def __iter__(self) -> Iterator[Any]:
    for item in self._items:
      self.count += 1
      yield item


class Result(NamedTuple):
  paths: list[str]
  num_samples: int
  skipped: SkipLog


def run(output_dir: str, samples_per_shard: int, csv_path: str | None = None,
        image_folder: str | None = None, csv_separator: str = "\t", csv_image_key: str = "filepath",
        csv_caption_key: str = "title", synthetic_samples: int | None = None,
        synthetic_image_size: int = 64, seed: int = 0,
        output_format: str = "webdataset") -> Result:
  """The command line's work, callable from Python."""
  inputs = {"--csv": csv_path, "--image_folder": image_folder, "--synthetic": synthetic_samples}
  if sum(value is not None for value in inputs.values()) != 1:
    raise ValueError("Need exactly one of --csv, --image_folder and --synthetic; got "
                     + ", ".join(f"{flag}={value!r}" for flag, value in inputs.items()) + ".")
  if not output_dir:
    raise ValueError(f"--output_dir={output_dir!r}: need a directory to write the shards to.")
  if samples_per_shard < 1:
    raise ValueError(f"--samples_per_shard={samples_per_shard}: need >= 1.")
  _format(output_format)  # Fails before any work.
  skipped = SkipLog()
  if synthetic_samples is not None:
    if synthetic_samples < 1:
      raise ValueError(f"--synthetic={synthetic_samples}: need a number of samples >= 1.")
    if synthetic_image_size < 1:
      raise ValueError(f"--synthetic_image_size={synthetic_image_size}: need >= 1 pixels.")
    samples = read_synthetic(synthetic_samples, synthetic_image_size, seed)
    source = f"--synthetic={synthetic_samples}"
  elif csv_path is not None:
    if not tf.io.gfile.exists(csv_path) or tf.io.gfile.isdir(csv_path):
      raise ValueError(f"--csv={csv_path}: no such file.")
    samples = read_csv(csv_path, skipped, _separator(csv_separator), csv_image_key,
                       csv_caption_key)
    source = f"--csv={csv_path}"
  else:
    if not tf.io.gfile.isdir(image_folder):
      raise ValueError(f"--image_folder={image_folder}: no such directory.")
    samples = read_image_folder(image_folder, skipped)
    source = f"--image_folder={image_folder}"
  counter = _Counter(samples)
  paths = write_shards(counter, output_dir, samples_per_shard, output_format)
  if not paths:
    raise ValueError(f"{source}: no usable samples; nothing written.\n{skipped.summary()}")
  return Result(paths, counter.count, skipped)


_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write 00000.tar, 00001.tar, ...")
_SAMPLES_PER_SHARD = flags.DEFINE_integer("samples_per_shard", 10_000, "Samples per tar file.")
_CSV = flags.DEFINE_string("csv", None, "A CSV/TSV of image paths and captions (open_clip's "
                           "--dataset-type csv); relative paths are relative to its directory.")
_CSV_SEPARATOR = flags.DEFINE_string("csv_separator", "\t", r"Column separator of --csv ('\t' ok).")
_CSV_IMAGE_KEY = flags.DEFINE_string("csv_image_key", "filepath", "Column of --csv: image paths.")
_CSV_CAPTION_KEY = flags.DEFINE_string("csv_caption_key", "title", "Column of --csv: captions.")
_IMAGE_FOLDER = flags.DEFINE_string("image_folder", None, "A folder searched recursively for "
                                    f"{', '.join(IMAGE_EXTENSIONS)} images, each captioned by "
                                    "the file <stem>.txt beside it.")
_SYNTHETIC = flags.DEFINE_integer("synthetic", None, "Write this many samples of the built-in "
                                  "synthetic dataset (split 'train'), as JPEG images.")
_SYNTHETIC_IMAGE_SIZE = flags.DEFINE_integer("synthetic_image_size", 64,
                                             "Side of the --synthetic images, in pixels.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the --synthetic dataset (its data.seed).")
_FORMAT = flags.DEFINE_enum("format", "webdataset", list(FORMATS),
                            "webdataset: tar files; tfrecord: TFRecord files of tf.train.Example.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  result = run(_OUTPUT_DIR.value, _SAMPLES_PER_SHARD.value, _CSV.value, _IMAGE_FOLDER.value,
               _CSV_SEPARATOR.value, _CSV_IMAGE_KEY.value, _CSV_CAPTION_KEY.value, _SYNTHETIC.value,
               _SYNTHETIC_IMAGE_SIZE.value, _SEED.value, _FORMAT.value)
  if result.skipped.total:
    print(result.skipped.summary())
  pattern = shard_pattern(_OUTPUT_DIR.value, len(result.paths), _FORMAT.value)
  print(f"Wrote {result.num_samples} samples in {len(result.paths)} shard(s) to "
        f"{_OUTPUT_DIR.value}.\nTrain on them with: --config.data.name={_FORMAT.value} "
        f"--config.data.{_FORMAT.value}.files='{pattern}'")


if __name__ == "__main__":
  flags.mark_flags_as_required(["output_dir"])
  app.run(main)
