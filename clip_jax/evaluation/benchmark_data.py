"""The benchmark's test sets (`clip_jax.evaluation.benchmark_tasks`), from where they are found:
DataComp's or CLIP_benchmark's WebDataset copies under a data root (local or gs://), the Hugging
Face datasets DataComp's scripts cache there (retrieval, WinoGAViL), else TFDS.

The WebDataset layout is CLIP_benchmark's, which DataComp's download script fetches:

  <root>/wds_<task>_test/classnames.txt                          one class name per line
  <root>/wds_<task>_test/zeroshot_classification_templates.txt   "{c}" marks the class name
  <root>/wds_<task>_test/dataset_type.txt                        "retrieval" for caption sets
  <root>/wds_<task>_test/test/nshards.txt, 0.tar, 1.tar, ...

A sample holds its image (webp, png, jpg or jpeg), its class (`cls`, an integer in text) or its
captions (`txt`, one per line), and for the WILDS and fairness sets a metadata vector (`npy`, read
as data: numpy's format without pickles). Images get the model's evaluation view, as
`input_pipeline.eval_data` gives TFDS sets; nothing is shuffled or dropped, and a sample that lacks
its image or label stops the evaluation, naming its shard, rather than changing the test set.

DataComp's download script caches Flickr30k, COCO's 5k test images and WinoGAViL with Hugging
Face `datasets` (`load_dataset("nlphuji/<name>", split="test", cache_dir=<root>/hf_cache)`):
Arrow files `<root>/hf_cache/nlphuji___<name>/<config>/<version>/<hash>/<name>-test*.arrow`, read
here with pyarrow a
record batch at a time, an image being `datasets`' {"bytes", "path"} (the path read when the
bytes are not stored).
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import tensorflow as tf

from clip_jax import files
from clip_jax import image_preparation
from clip_jax import settings
from clip_jax.evaluation import benchmark_tasks
from input_pipeline import eval_data
from input_pipeline.sources import webdataset

IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")  # CLIP_benchmark's, in its order
SPLIT = "test"


@dataclasses.dataclass(frozen=True)
class Found:
  """Where a task's data is: a WebDataset folder (`directory`), Hugging Face's Arrow files
  (`arrow_files`) or TFDS (`tfds`)."""
  task: benchmark_tasks.Task
  directory: str = ""
  arrow_files: tuple[str, ...] = ()
  tfds: benchmark_tasks.TfdsData | None = None
  data_dir: str = ""  # TFDS's data_dir
  mock_examples: int = 0  # TFDS's mock data (tests)

  def describe(self) -> str:
    if self.arrow_files:
      return f"{self.arrow_files[0]}" + (f" and {len(self.arrow_files) - 1} more"
                                         if len(self.arrow_files) > 1 else "")
    return self.directory or f"TFDS {self.tfds.name}:{self.tfds.split}"


def find(task: benchmark_tasks.Task, data_dir: str, *, mock_examples: int = 0) -> Found | str:
  """Where the task's test set is, or why it is absent (a sentence): a WebDataset folder under
  `data_dir`, else its TFDS dataset prepared in `data_dir` or in TFDS's default data_dir."""
  if task.kind == benchmark_tasks.LINEAR_PROBE and task.tfds is None:
    return "no TFDS copy of its image-label data: clip_jax probes linearly on TFDS data only"
  for name in task.directories if task.kind != benchmark_tasks.LINEAR_PROBE else ():
    if data_dir and (files.path(data_dir) / name / SPLIT).exists():
      return Found(task, directory=str(files.path(data_dir) / name))
  arrow_files = hugging_face_files(task, data_dir)
  if arrow_files:
    return Found(task, arrow_files=arrow_files)
  if task.tfds is not None:
    for tfds_data_dir in dict.fromkeys((data_dir, "")):
      builder = eval_data.tfds_builder(task.tfds.name, data_dir=tfds_data_dir,
                                       mock_examples=mock_examples)
      if mock_examples or builder.is_prepared():
        return Found(task, tfds=task.tfds, data_dir=tfds_data_dir, mock_examples=mock_examples)
  folders = [*task.directories, *([_hugging_face_folder(task)] if task.hugging_face else [])]
  where = f"no {' or '.join(folders)} in {data_dir!r}" if data_dir else "no --data_dir"
  return where + (f", and TFDS's {task.tfds.name} is not prepared" if task.tfds else "")


def _hugging_face_folder(task: benchmark_tasks.Task) -> str:
  return f"hf_cache/nlphuji___{task.hugging_face}"


def hugging_face_files(task: benchmark_tasks.Task, data_dir: str) -> tuple[str, ...]:
  """The Arrow files of the task's test split in `datasets`' cache under `data_dir`, in order."""
  if not (task.hugging_face and data_dir):
    return ()
  folder = files.path(data_dir) / _hugging_face_folder(task)
  if not folder.exists():
    return ()
  # datasets' layout: <config>/<version>/<hash>/<name>-test[-NNNNN-of-NNNNN].arrow
  return tuple(sorted(str(path) for path in folder.glob(f"*/*/*/{task.hugging_face}-test*.arrow")))


def _record_batches(path: str) -> Iterator[pa.RecordBatch]:
  """An Arrow file's record batches: `datasets` writes the stream format (the file format is
  read too)."""
  with files.path(path).open("rb") as file:
    source = pa.PythonFile(file, mode="r")
    try:
      yield from pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
      file.seek(0)
      reader = pa.ipc.open_file(pa.PythonFile(file, mode="r"))
      for index in range(reader.num_record_batches):
        yield reader.get_batch(index)


def hugging_face_rows(found: Found, columns: Sequence[str]) -> Iterator[dict]:
  """The rows of the task's Arrow files, with `columns` only."""
  for path in found.arrow_files:
    for batch in _record_batches(path):
      missing = [column for column in columns if column not in batch.schema.names]
      if missing:
        raise ValueError(f"{path}: no column {', '.join(missing)} (columns: "
                         f"{', '.join(batch.schema.names)}).")
      yield from batch.select(list(columns)).to_pylist()


def image_bytes(value: dict | None, where: str) -> bytes:
  """The encoded image of a `datasets` Image value: its bytes, or the file at its path."""
  if value and value.get("bytes"):
    return value["bytes"]
  if value and value.get("path"):
    path = files.path(value["path"])
    if path.stat().length > settings.MAX_MEMBER_BYTES:
      raise ValueError(f"{where}: image {value['path']} holds more than "
                       f"{settings.MAX_MEMBER_BYTES} bytes.")
    return path.read_bytes()
  raise ValueError(f"{where}: a row without its image.")


def _lines(path) -> list[str] | None:
  return [line.strip() for line in path.read_text().splitlines()] if path.exists() else None


def classnames_and_templates(found: Found) -> tuple[list[str] | None, list[str] | None]:
  """The class names and templates the data carries (None where it carries none)."""
  if not found.directory:
    return None, None
  directory = files.path(found.directory)
  return (_lines(directory / "classnames.txt"),
          _lines(directory / "zeroshot_classification_templates.txt"))


def shards(directory: str) -> list[str]:
  """The test split's shards in order: nshards.txt's count, else every .tar by number."""
  split = files.path(directory) / SPLIT
  count_file = split / "nshards.txt"
  if count_file.exists():
    return [str(split / f"{index}.tar") for index in range(int(count_file.read_text().strip()))]
  found = sorted(split.glob("*.tar"), key=lambda path: (len(path.name), path.name))
  if not found:
    raise FileNotFoundError(f"{split}: no nshards.txt and no .tar shards.")
  return [str(path) for path in found]


def _samples(found: Found, retrieval: bool) -> Iterator[tuple]:
  """(image bytes, label, metadata int64 [M]) or (image bytes, captions) per sample."""
  if found.arrow_files:  # retrieval sets only
    for row in hugging_face_rows(found, ("image", "caption")):
      yield (image_bytes(row["image"], found.describe()),
             [caption.encode() for caption in row["caption"]])
    return
  for shard in shards(found.directory):
    for key, members, _ in webdataset.read_samples(shard):
      image = next((members[extension] for extension in IMAGE_EXTENSIONS
                    if extension in members), None)
      wanted = "txt" if retrieval else "cls"
      if image is None or wanted not in members:
        raise ValueError(f"{shard}: sample {key!r} has no {'image' if image is None else wanted}"
                         f" (members: {', '.join(sorted(members)) or 'none'}).")
      if retrieval:
        yield image, [caption.encode() for caption in members["txt"].decode().splitlines()]
      else:
        metadata = (np.load(io.BytesIO(members["npy"]), allow_pickle=False).astype(np.int64)
                    .reshape(-1) if "npy" in members else np.zeros([0], np.int64))
        yield image, int(members["cls"].decode().strip()), metadata


def labelled_batches(found: Found, *, image_size: int, batch_size: int,
                     view: image_preparation.Preprocessing) -> Iterator[dict[str, np.ndarray]]:
  """{"image": uint8 [b, size, size, 3], "label": int32 [b], "metadata": int64 [b, M]}.

  TFDS sets have no metadata (M = 0); an ImageNet subset's labels are renumbered into it (images
  of other classes, which the test sets do not hold, would get -1)."""
  if found.tfds is not None:
    return _tfds_labelled(found, image_size=image_size, batch_size=batch_size, view=view)
  examples = tf.data.Dataset.from_generator(
      lambda: _samples(found, retrieval=False),
      output_signature=(tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64),
                        tf.TensorSpec([None], tf.int64)))

  @tf.autograph.experimental.do_not_convert
  def preprocess(image, label, metadata):
    return {"image": eval_data.evaluation_image(image, image_size, view),
            "label": tf.cast(label, tf.int32), "metadata": metadata}

  return _reraised(eval_data.batches(
      examples.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE), batch_size))


def _reraised(batches: Iterator[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
  """The batches, a bad sample's ValueError raised as the reader raised it (tf.data wraps it in
  an InvalidArgumentError of its own, with the function's trace before the message)."""
  try:
    yield from batches
  except tf.errors.InvalidArgumentError as error:
    if "ValueError: " not in error.message:
      raise
    raise ValueError(error.message.rsplit("ValueError: ", 1)[1].strip()) from None


def _tfds_labelled(found: Found, *, image_size: int, batch_size: int,
                   view: image_preparation.Preprocessing) -> Iterator[dict[str, np.ndarray]]:
  batches = eval_data.image_label_batches(
      found.tfds.name, found.tfds.split, image_size=image_size, batch_size=batch_size, view=view,
      data_dir=found.data_dir, mock_examples=found.mock_examples)
  subset = (np.array(benchmark_tasks.imagenet_subset_labels(found.task))
            if found.tfds.imagenet_subset else None)
  for batch in batches:
    if subset is not None:
      position = np.searchsorted(subset, batch["label"]).clip(0, len(subset) - 1)
      batch["label"] = np.where(subset[position] == batch["label"], position, -1).astype(np.int32)
    yield {**batch, "metadata": np.zeros([len(batch["label"]), 0], np.int64)}


def caption_batches(found: Found, *, image_size: int, batch_size: int,
                    view: image_preparation.Preprocessing) -> Iterator[dict[str, np.ndarray]]:
  """{"image": uint8 [b, size, size, 3], "captions": bytes [b, K]}, rows padded with b""."""
  if found.tfds is not None:
    return eval_data.caption_batches(
        found.tfds.name, found.tfds.split, image_size=image_size, batch_size=batch_size,
        view=view, data_dir=found.data_dir, mock_examples=found.mock_examples,
        caption_feature=found.tfds.caption_feature)
  examples = tf.data.Dataset.from_generator(
      lambda: _samples(found, retrieval=True),
      output_signature=(tf.TensorSpec([], tf.string), tf.TensorSpec([None], tf.string)))

  @tf.autograph.experimental.do_not_convert
  def preprocess(image, captions):
    return {"image": eval_data.evaluation_image(image, image_size, view), "captions": captions}

  return _reraised(eval_data.batches(
      examples.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE), batch_size))


def association_instances(found: Found) -> list[tuple[str, np.ndarray]]:
  """WinoGAViL's cues in order, each with which of its candidates are associations (bool [n])."""
  return [(row["cue"], np.isin(row["candidates"], row["associations"]))
          for row in hugging_face_rows(found, ("cue", "candidates", "associations"))]


def association_batches(found: Found, *, image_size: int, batch_size: int,
                        view: image_preparation.Preprocessing) -> Iterator[dict[str, np.ndarray]]:
  """Every cue's candidate images in order: {"image": uint8 [b, size, size, 3], "instance":
  int32 [b] (the cue's index)}."""
  def candidates():
    for instance, row in enumerate(hugging_face_rows(found, ("candidate_images",))):
      for image in row["candidate_images"]:
        yield image_bytes(image, found.describe()), instance

  examples = tf.data.Dataset.from_generator(
      candidates, output_signature=(tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32)))

  @tf.autograph.experimental.do_not_convert
  def preprocess(image, instance):
    return {"image": eval_data.evaluation_image(image, image_size, view), "instance": instance}

  return _reraised(eval_data.batches(
      examples.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE), batch_size))


def is_retrieval(found: Found) -> bool:
  """Whether the data is a caption set: its dataset_type.txt says so (TFDS, Hugging Face: the
  task's kind)."""
  if not found.directory:
    return found.task.kind == benchmark_tasks.RETRIEVAL
  kind = _lines(files.path(found.directory) / "dataset_type.txt")
  return bool(kind) and kind[0].lower() == "retrieval"


def npy_bytes(array: np.ndarray) -> bytes:
  """A metadata vector as a sample's `npy` member (numpy's format, no pickles)."""
  out = io.BytesIO()
  np.save(out, array, allow_pickle=False)
  return out.getvalue()


def write_task(folder: str, samples: Sequence[dict[str, bytes]], *,
               classnames: Sequence[str] | None = None, templates: Sequence[str] | None = None,
               dataset_type: str = "", shard_size: int = 10_000) -> None:
  """A test set in the layout above: `samples` ({extension: bytes}, keyed s0000000, s0000001,
  ...) in shards of `shard_size`, with nshards.txt and the metadata files given."""
  root = files.path(folder)
  (root / SPLIT).mkdir(parents=True, exist_ok=True)
  for name, lines in (("classnames.txt", classnames),
                      ("zeroshot_classification_templates.txt", templates),
                      ("dataset_type.txt", [dataset_type] if dataset_type else None)):
    if lines is not None:
      files.write_text(root / name, "\n".join(lines) + "\n")
  starts = range(0, len(samples), shard_size)
  for number, start in enumerate(starts):
    shard = io.BytesIO()
    with tarfile.open(fileobj=shard, mode="w") as tar:
      for index, members in enumerate(samples[start:start + shard_size], start):
        for extension, data in members.items():
          info = tarfile.TarInfo(f"s{index:07d}.{extension}")
          info.size = len(data)
          tar.addfile(info, io.BytesIO(data))
    files.write_bytes(root / SPLIT / f"{number}.tar", shard.getvalue())
  files.write_text(root / SPLIT / "nshards.txt", f"{len(starts)}\n")
