"""CLIP input pipeline: examples of a source -> host-local training batches, exactly resumable.

Sample indices decide everything. Global batch k (counting from a resume position `start`) holds
samples start + k * G ... start + (k + 1) * G - 1 for a global batch size G, and process p of P
takes the p-th of its P equal slices. So the processes' batches are disjoint and together form
the single-process batch, and the state is one number: the index of the next sample.
"""

from __future__ import annotations

import atexit
import numbers
from typing import Any, Iterator
import weakref

import ml_collections
import numpy as np
import tensorflow as tf

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
  """The training stream: batches, and the position to resume from.

  The position counts the batches handed out, not those tf.data has prefetched, so a state taken
  after k batches resumes with batch k + 1.
  """

  def __init__(self, dataset: tf.data.Dataset, global_batch_size: int, next_sample_index: int):
    super().__init__(dataset)
    self._global_batch_size = global_batch_size
    self._next_sample_index = next_sample_index

  def __next__(self) -> Batch:
    batch = super().__next__()
    self._next_sample_index += self._global_batch_size
    return batch

  def get_state(self) -> dict[str, Any]:
    """JSON-serialisable; identical on every process."""
    return {"next_sample_index": self._next_sample_index}


def create_dataset(data_config: ml_collections.ConfigDict, *, global_batch_size: int,
                   process_index: int = 0, process_count: int = 1,
                   state: dict[str, Any] | None = None) -> DataIterator:
  """The endless training stream of this process.

  Yields {"image": float32 [b, H, W, 3] CLIP-normalised, "text": int32 [b, context_length]} with
  b = global_batch_size // process_count. `state` is a `get_state()` of an earlier iterator
  (possibly of another process or process count): the stream continues with its next batch.
  """
  source = sources.get_source(data_config.name)
  tokenizer = tokenizers.create_tokenizer(data_config.tokenizer, data_config.context_length)
  local_batch_size = _local_batch_size(global_batch_size, process_index, process_count)
  start = _resume_position(state)
  indices = _process_indices(start, global_batch_size, local_batch_size, process_index)

  def preprocess(batch):
    return {"image": preprocessing.normalize_images(batch["image"]),
            "text": tokenizer.tf_tokenize(batch["caption"])}

  batches = (source(data_config, indices)
             .batch(local_batch_size, drop_remainder=True)
             .map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
             .prefetch(tf.data.AUTOTUNE))
  return DataIterator(batches, global_batch_size, start)


def create_eval_images(data_config: ml_collections.ConfigDict, *, num_images: int,
                       batch_size: int) -> BatchIterator:
  """New synthetic images with their attributes, for zero-shot evaluation.

  Drawn from the "eval" seed stream, so never training images; half of them (odd indices) show
  held-out colour-shape combinations. Yields {"image": float32 [b, H, W, 3] CLIP-normalised,
  "shape": int32 [b], "colour": int32 [b], "heldout": bool [b]}, the last batch possibly shorter.
  """
  if data_config.name != "synthetic":
    raise ValueError(f"data.name={data_config.name!r}: attribute labels exist only for "
                     "synthetic data; allowed: synthetic.")

  def preprocess(batch):
    labels = {key: batch[key] for key in ("shape", "colour", "heldout")}
    return {"image": preprocessing.normalize_images(batch["image"]), **labels}

  examples = synthetic.examples(data_config, tf.data.Dataset.range(num_images), split="eval")
  batches = examples.batch(batch_size).map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  return BatchIterator(batches)


def _local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of the "
                     f"process count; allowed: multiples of {process_count}.")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index}; allowed: 0..{process_count - 1}.")
  return global_batch_size // process_count


def _resume_position(state: dict[str, Any] | None) -> int:
  """The first sample index to produce: 0 for a fresh start."""
  if state is None:
    return 0
  position = state.get("next_sample_index")
  if not isinstance(position, numbers.Integral) or position < 0:
    raise ValueError(f"data state {state!r}: need {{'next_sample_index': int >= 0}}, as returned "
                     "by get_state().")
  return int(position)


def _process_indices(start: int, global_batch_size: int, local_batch_size: int,
                     process_index: int) -> tf.data.Dataset:
  """The global sample indices of this process's slice of every global batch, in order."""

  def global_index(position):
    batch, offset = position // local_batch_size, position % local_batch_size
    return start + batch * global_batch_size + process_index * local_batch_size + offset

  return tf.data.Dataset.counter().map(global_index)
