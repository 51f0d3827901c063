"""CLIP input pipeline: examples of a source -> host-local training batches, exactly resumable.

Sample indices decide everything. Global batch k (counting from a resume position `start`) holds
samples start + k * G ... start + (k + 1) * G - 1 for a global batch size G, and process p of P
takes the p-th of its P equal slices. So the processes' batches are disjoint and together form
the single-process batch, and the state is one number: the index of the next sample.

Every function this package gives tf.data is traced as written
(`tf.autograph.experimental.do_not_convert`): none branches on tensors in Python, and AutoGraph's
rewriting of them cost seconds at each start of a pipeline (measured: 5 s of a 2-step training
run's 55).
"""

from __future__ import annotations

import atexit
import itertools
import os
from typing import Any, Iterator
import weakref

import numpy as np

from clip_jax import host_tensorflow
from clip_jax import settings

# Before this package's modules import TensorFlow and before its first op, in every process that
# builds a dataset: quietly, and with the accelerators hidden from it.
tf = host_tensorflow.import_tensorflow()

# pylint: disable=g-import-not-at-top,wrong-import-position
from input_pipeline import preprocessing
from input_pipeline import sources
from input_pipeline import tokenizers
from input_pipeline.sources import synthetic

Batch = dict[str, np.ndarray]


class BatchIterator:
  """Numpy batches of a tf.data pipeline, stopped at interpreter exit.

  The synthetic source renders in Python inside tf.data threads; if such a pipeline is still
  running when the interpreter shuts down, the process hangs. Closing every live iterator from an
  `atexit` hook, while the interpreter is still whole, lets it exit.
  """

  def __init__(self, dataset: tf.data.Dataset):
    self._iterator = dataset.as_numpy_iterator()
    _LIVE_ITERATORS.add(self)

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    return next(self._iterator)

  def close(self) -> None:
    """Stops the pipeline and its threads; the iterator is then exhausted."""
    self._iterator = iter(())


_LIVE_ITERATORS: weakref.WeakSet[BatchIterator] = weakref.WeakSet()


@atexit.register
def _close_live_iterators() -> None:
  for iterator in list(_LIVE_ITERATORS):
    iterator.close()


class DataIterator(BatchIterator):
  """The training stream of one process: batches, the data state, and the skipped-sample count.

  Every example carries its position in the source and its record number (records handed out by
  the source so far, good or bad), which `__next__` strips from the batch. The state is that of
  the last example of the last batch handed out, not of what tf.data has prefetched, so a state
  taken after k batches resumes with batch k + 1.
  """

  def __init__(self, dataset: tf.data.Dataset, state: dict[str, Any], source_digest: str | None):
    super().__init__(dataset)
    self._state = dict(state)
    self.source_digest = source_digest  # of the stream read (None: synthetic data)

  def __next__(self) -> Batch:
    batch = super().__next__()
    position, record_number = batch.pop("position"), batch.pop("record_number")
    self._state = {"samples": self._state["samples"] + len(record_number),
                   "records": int(record_number[-1]),
                   "position": [int(value) for value in position[-1]]}
    return batch

  @property
  def skipped_samples(self) -> int:
    """Records of the source dropped so far: undecodable images, missing or empty captions."""
    return self._state["records"] - self._state["samples"]

  def get_state(self) -> dict[str, Any]:
    """This process's state, JSON-serialisable; `combine_states` makes a checkpoint's of them."""
    return dict(self._state)


class DataChanged(ValueError):
  """A resume whose data source reads other shards than the saved data state's positions mean."""


def combine_states(process_states: list[dict[str, Any]],
                   source_digest: str | None) -> dict[str, Any]:
  """The data state of a checkpoint: every process's `get_state()`, by process index, and the
  digest of the shards they read (`DataIterator.source_digest`)."""
  return {"processes": list(process_states), "source_digest": source_digest}


def create_dataset(data: settings.Data, *, global_batch_size: int, process_index: int = 0,
                   process_count: int = 1, state: dict[str, Any] | None = None) -> DataIterator:
  """The endless training stream of this process.

  Yields {"image": uint8 [b, H, W, 3], "text": int32 [b, context_length]} with
  b = global_batch_size // process_count. `state` is a `combine_states` of the processes' states
  at a checkpoint: the stream continues with the next batch. Synthetic data resumes on any
  process count; the others need the same count (each process owns its shards) and the same
  shards (DataChanged otherwise: a glob or folder whose files changed under the same pattern).
  """
  tokenizer = tokenizers.create_tokenizer(data)
  local_batch_size = _local_batch_size(global_batch_size, process_index, process_count)
  local_state = _local_state(data.name, state, process_index, process_count)
  if data.name == "synthetic":
    examples = _synthetic_examples(data, local_state, global_batch_size, local_batch_size,
                                   process_index)
    source_digest = None
  else:
    stream = sources.create_stream(data, process_index=process_index, process_count=process_count)
    _check_source(state, stream.digest)
    examples = _stream_examples(data, stream, local_state, process_index)
    source_digest = stream.digest

  @tf.autograph.experimental.do_not_convert
  def finish(batch):
    text = tokenizer.tf_tokenize(batch.pop("caption"))
    return {**batch, "text": text}

  batches = (examples.batch(local_batch_size, drop_remainder=True)
             .map(finish, num_parallel_calls=tf.data.AUTOTUNE)
             .prefetch(tf.data.AUTOTUNE))
  return DataIterator(batches, local_state, source_digest)


def create_eval_images(data: settings.Data, *, num_images: int, batch_size: int) -> BatchIterator:
  """New synthetic images with their attributes, for zero-shot evaluation.

  Drawn from the "eval" seed stream, so never training images; half of them (odd indices) show
  held-out colour-shape combinations. Yields {"image": uint8 [b, H, W, 3],
  "shape": int32 [b], "colour": int32 [b], "heldout": bool [b]}, the last batch possibly shorter.
  """
  if data.name != "synthetic":
    raise ValueError(f"data.name={data.name!r}: attribute labels exist only for "
                     "synthetic data; allowed: synthetic.")

  @tf.autograph.experimental.do_not_convert
  def preprocess(batch):
    labels = {key: batch[key] for key in ("shape", "colour", "heldout")}
    return {"image": batch["image"], **labels}

  examples = synthetic.examples(data, tf.data.Dataset.range(num_images), split="eval")
  batches = examples.batch(batch_size).map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  return BatchIterator(batches)


def _local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of the "
                     f"process count; allowed: multiples of {process_count}.")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index}; allowed: 0..{process_count - 1}.")
  return global_batch_size // process_count


def _local_state(name: str, state: dict[str, Any] | None, process_index: int,
                 process_count: int) -> dict[str, Any]:
  """This process's state to start from: {"samples", "records", "position"}."""
  if state is None:
    return {"samples": 0, "records": 0, "position": None}
  processes = state.get("processes") if isinstance(state, dict) else None
  if not isinstance(processes, list) or not processes:
    raise ValueError(f"data state {state!r}: need {{'processes': [state of each process]}}, as "
                     "made by combine_states.")
  if len(processes) == process_count:
    return processes[process_index]
  if name == "synthetic":  # Every process holds the same position: the next global sample.
    return {**processes[0], "samples": 0, "records": 0}
  raise ValueError(f"The data state was saved by {len(processes)} processes, this run has "
                   f"{process_count}: data.name={name!r} resumes only on as many processes "
                   "(each reads its own shards); restart the data from scratch instead.")


def _check_source(state: dict[str, Any] | None, digest: str) -> None:
  """Refuses to resume positions saved in another list of shards (states saved before the digest
  was kept have none, and are taken as they are)."""
  saved = (state or {}).get("source_digest")
  if saved is not None and saved != digest:
    raise DataChanged(
        f"The data settings name other shards than the checkpoint's data state was saved "
        f"reading (shard list digest {saved[:12]}, now {digest[:12]}: files added to, removed "
        "from or renamed in a glob or folder), so its positions would point into other shards: "
        "restore the shard list the run started with, or train on the new one in a new workdir.")


def _synthetic_examples(data: settings.Data, local_state, global_batch_size: int,
                        local_batch_size: int, process_index: int) -> tf.data.Dataset:
  """Rendered examples of this process's slice of every global batch, with their bookkeeping.

  Global batch k (counting from the resume position `start`) holds samples
  start + k * G ... start + (k + 1) * G - 1, and process p takes the p-th slice of it, so the
  processes' batches are disjoint and together form the single-process batch. The position of an
  example is the first sample of the next global batch: the same on every process.
  """
  start = local_state["position"][0] if local_state["position"] else 0
  records_before = local_state["records"]

  @tf.autograph.experimental.do_not_convert
  def bookkeeping(counter):
    batch, offset = counter // local_batch_size, counter % local_batch_size
    index = start + batch * global_batch_size + process_index * local_batch_size + offset
    return index, {"position": tf.reshape(start + (batch + 1) * global_batch_size, [1]),
                   "record_number": records_before + counter + 1}

  indices_and_bookkeeping = tf.data.Dataset.counter().map(bookkeeping)
  rendered = synthetic.examples(data, indices_and_bookkeeping.map(lambda index, _: index))

  @tf.autograph.experimental.do_not_convert
  def keep(example, extra):
    return {"image": example["image"], "caption": example["caption"], **extra}

  return tf.data.Dataset.zip(rendered, indices_and_bookkeeping.map(lambda _, extra: extra)).map(
      keep)


# Records per element of the reading stage: one Python call hands tf.data this many, and decoding
# works on them as one unit, which keeps the per-record cost of both in C++.
RECORD_CHUNK = 64


def read_records(stream, local_state: dict[str, Any]) -> tf.data.Dataset:
  """The reading stage: chunks of raw records of `stream` after `local_state`, in stream order.

  Yields {"image": string [n], "captions": ragged string [n, None], "record_number": int64 [n],
  "position": int64 [n, position_size]} with n = RECORD_CHUNK records. Python only parses the
  shards; its per-record work is the minimum that exact resume needs (each record's position).
  """
  def chunks():
    numbered = enumerate(stream.iterate(local_state["position"]), local_state["records"] + 1)
    while chunk := list(itertools.islice(numbered, RECORD_CHUNK)):
      captions = [record["captions"] for _, (record, _) in chunk]
      yield {"image": np.array([record["image"] for _, (record, _) in chunk], object),
             "caption_values": np.array([caption for row in captions for caption in row], object),
             "caption_counts": np.array(list(map(len, captions)), np.int64),
             "record_number": np.array([number for number, _ in chunk], np.int64),
             "position": np.stack([position for _, (_, position) in chunk])}

  signature = {"image": tf.TensorSpec([None], tf.string),
               "caption_values": tf.TensorSpec([None], tf.string),
               "caption_counts": tf.TensorSpec([None], tf.int64),
               "record_number": tf.TensorSpec([None], tf.int64),
               "position": tf.TensorSpec([None, stream.position_size], tf.int64)}

  @tf.autograph.experimental.do_not_convert
  def ragged_captions(chunk):
    captions = tf.RaggedTensor.from_row_lengths(chunk.pop("caption_values"),
                                                chunk.pop("caption_counts"))
    return {**chunk, "captions": captions}

  return tf.data.Dataset.from_generator(chunks, output_signature=signature).map(ragged_captions)


def _stream_examples(data: settings.Data, stream, local_state,
                     process_index: int) -> tf.data.Dataset:
  """Decoded, augmented examples of a record stream, in its order; bad records dropped (and so
  counted). Chunks of records are decoded in parallel, each by one thread."""

  @tf.autograph.experimental.do_not_convert
  def has_caption(record):
    return tf.reduce_any(tf.strings.length(tf.strings.strip(record["captions"])) > 0)

  @tf.autograph.experimental.do_not_convert
  def decode(record):
    # Per-sample randomness from (seed, process, record number): a resumed run is bit-identical,
    # whatever the parallelism.
    sample_seed = tf.stack([tf.constant(data.seed * 1_000_003 + process_index, tf.int64),
                            record["record_number"]])
    crop_seed, caption_seed = tf.unstack(tf.random.experimental.stateless_split(sample_seed, 2))
    captions = record["captions"]
    captions = tf.boolean_mask(captions, tf.strings.length(tf.strings.strip(captions)) > 0)
    choice = tf.random.stateless_uniform([], caption_seed, 0, tf.shape(captions)[0], tf.int32)
    image = preprocessing.train_image(record["image"], data.image_size, crop_seed,
                                      scale=data.crop_scale, exact_resize=data.exact_resize,
                                      max_pixels=data.max_image_pixels)
    return {"image": image,
            "caption": captions[choice], "record_number": record["record_number"],
            "position": record["position"]}

  @tf.autograph.experimental.do_not_convert
  def decode_or_drop(chunk):
    # ignore_errors on a dataset of this chunk only: decoding errors drop the record, while
    # errors of the reading (a vanished bucket, a bug) still stop the run.
    return (tf.data.Dataset.from_tensor_slices(chunk).filter(has_caption).map(decode)
            .ignore_errors())

  # A chunk yields at most RECORD_CHUNK examples, so with this block length each chunk is
  # handed out whole before the next: the order is the stream's for any number of threads. One
  # chunk per core at a time (tf.data's AUTOTUNE cycle length starts at one and grows slowly).
  return read_records(stream, local_state).interleave(
      decode_or_drop, cycle_length=_usable_cores(), block_length=RECORD_CHUNK,
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _usable_cores() -> int:
  """The CPUs this process may run on (its affinity, as set by taskset), else all of them."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1
