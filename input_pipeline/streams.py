"""Deterministic, resumable record streams: how real data is read exactly once per epoch.

A stream is what one process reads of a dataset stored in shards (tar or TFRecord files, rows of
a CSV, slices of a TFDS split). It yields raw records (image bytes and captions, nothing decoded)
in an order that is a pure function of (seed, epoch, process), each with a *position*: a short
int64 vector from which the stream restarts with exactly the records after this one. The pipeline
passes positions through decoding and batching, so the position of the last sample of the last
batch handed to the trainer is the data state saved in a checkpoint, whatever was prefetched,
dropped as corrupt or still sitting in a shuffle buffer.

Order within an epoch:
  1. The shard list is permuted with (seed, epoch); process p of P takes shards p, p + P, ...
     So every shard is read by exactly one process, once per epoch.
  2. A process reads `cycle_length` shards at a time, round robin, one record from each in turn
     (mixing shards as tf.data's interleave would); a finished shard is replaced by the next.
  3. Records are shuffled in windows of `shuffle_window` consecutive records, each window with
     its own permutation. Unlike a streaming shuffle buffer, a window is rebuilt exactly from
     where its reading began, which is what keeps the position small: the epoch, the window, how
     many of its records were handed out, and the reading state at its start (the open shards and
     their byte offsets). Resuming re-reads one window at most, and seeks, never scans, to it.

Why Python: the reading is I/O plus header parsing, cheap next to JPEG decoding, which tf.data
does in parallel afterwards; tf.data's own readers cannot report the byte offset of a record, and
its iterator checkpoints store whole shuffle buffers of encoded images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from clip_jax import settings

# A raw record: {"image": encoded bytes (b"" if absent), "captions": list of bytes (may be empty)}.
Record = dict[str, Any]
# (shard, offset to start at) -> (record, offset of the record after it) pairs; offsets are opaque
# integers of the shard's reader (byte offsets for files, row numbers for tables).
ReadShard = Callable[[Any, int], Iterator[tuple[Record, int]]]


def make_record(image: bytes, captions: Sequence[bytes]) -> Record:
  """A record, its captions reduced to those that are valid UTF-8 (the others count as missing)."""
  return {"image": image, "captions": [caption for caption in captions if _is_utf8(caption)]}


def _is_utf8(text: bytes) -> bool:
  try:
    text.decode("utf-8")
  except UnicodeDecodeError:
    return False
  return True


def list_digest(items: Sequence[Any]) -> str:
  """The SHA-256 of a list, by the text of its items: what a stream reads, in a data state."""
  return hashlib.sha256(json.dumps([str(item) for item in items]).encode()).hexdigest()


class Stream(Protocol):
  """A resumable record stream of one process."""
  position_size: int
  # `list_digest` of what the stream reads, the same on every process (all processes' shards): a
  # position means something only in the stream of the same digest.
  digest: str

  def iterate(self, position: Sequence[int] | None = None) -> Iterator[tuple[Record, np.ndarray]]:
    """(record, position) pairs, forever (epoch after epoch); starts after `position`."""


@dataclasses.dataclass
class _ReadingState:
  """Where reading stands: shards open (ordinal in the epoch's list, next offset), next to open."""
  next_shard: int = 0
  open_shards: list[list[int]] = dataclasses.field(default_factory=list)


class ShardedStream:
  """One process's stream over a list of shards (see the module docstring)."""

  # epoch, window, records of the window handed out, next shard to open, number of open shards;
  # then (shard ordinal, offset) per open shard.
  _HEADER = 5

  def __init__(self, shards: Sequence[Any], read_shard: ReadShard, *, seed: int,
               process_index: int, process_count: int, cycle_length: int, shuffle_window: int,
               description: str, identity: Sequence[Any] | None = None):
    if len(shards) < process_count:
      raise ValueError(f"{description}: {len(shards)} shard(s) for {process_count} processes; "
                       "every process needs at least one (split the data into more shards).")
    self._shards = list(shards)
    self._read_shard = read_shard
    self._seed = seed
    self._process_index = process_index
    self._process_count = process_count
    self._cycle_length = cycle_length
    self._shuffle_window = shuffle_window
    self._description = description
    self.position_size = self._HEADER + 2 * cycle_length
    self.digest = list_digest(self._shards if identity is None else identity)

  def epoch_shards(self, epoch: int) -> list[Any]:
    """This process's shards in epoch `epoch`, in reading order."""
    order = np.random.default_rng([self._seed, epoch]).permutation(len(self._shards))
    return [self._shards[index] for index in order[self._process_index::self._process_count]]

  def iterate(self, position=None):
    epoch, window, handed_in_window, reading = self._unpack(position)
    while True:
      shards = self.epoch_shards(epoch)
      readers: dict[int, tuple[Iterator, int]] = {}  # open shard ordinal -> (reader, its offset)
      while True:
        start = _ReadingState(reading.next_shard, [list(slot) for slot in reading.open_shards])
        records = self._read_window(shards, reading, readers)
        if not records:
          break
        permutation = np.random.default_rng(
            [self._seed, self._process_index, epoch, window]).permutation(len(records))
        for index in range(handed_in_window, len(records)):
          yield records[permutation[index]], self._pack(epoch, window, index + 1, start)
        window, handed_in_window = window + 1, 0
      if window == 0:
        raise ValueError(f"{self._description}: process {self._process_index} read no records "
                         f"from its {len(shards)} shard(s) in epoch {epoch}.")
      epoch, window, handed_in_window, reading = epoch + 1, 0, 0, _ReadingState()

  def _read_window(self, shards, reading: _ReadingState, readers) -> list[Record]:
    """Reads the next window of records, round robin over the open shards; updates `reading`."""
    records = []
    while len(records) < self._shuffle_window:
      while len(reading.open_shards) < self._cycle_length and reading.next_shard < len(shards):
        reading.open_shards.append([reading.next_shard, 0])
        reading.next_shard += 1
      if not reading.open_shards:
        break
      slot = reading.open_shards.pop(0)
      ordinal, offset = slot
      reader, reader_offset = readers.get(ordinal, (None, None))
      if reader is None or reader_offset != offset:
        reader = self._read_shard(shards[ordinal], offset)
      item = next(reader, None)
      if item is None:
        readers.pop(ordinal, None)
        continue
      record, slot[1] = item
      readers[ordinal] = (reader, slot[1])
      records.append(record)
      reading.open_shards.append(slot)
    return records

  def _pack(self, epoch, window, handed_in_window, reading: _ReadingState) -> np.ndarray:
    position = np.full(self.position_size, -1, np.int64)
    position[:self._HEADER] = (epoch, window, handed_in_window, reading.next_shard,
                               len(reading.open_shards))
    for slot, (ordinal, offset) in enumerate(reading.open_shards):
      position[self._HEADER + 2 * slot:self._HEADER + 2 * slot + 2] = (ordinal, offset)
    return position

  def _unpack(self, position):
    if position is None:
      return 0, 0, 0, _ReadingState()
    position = [int(value) for value in position]
    if len(position) != self.position_size:
      raise ValueError(f"{self._description}: a data position of {len(position)} numbers, "
                       f"expected {self.position_size} (was data.cycle_length changed?).")
    epoch, window, handed_in_window, next_shard, open_count = position[:self._HEADER]
    slots = position[self._HEADER:self._HEADER + 2 * open_count]
    open_shards = [[slots[i], slots[i + 1]] for i in range(0, len(slots), 2)]
    return epoch, window, handed_in_window, _ReadingState(next_shard, open_shards)


class MixedStream:
  """Several streams drawn from with fixed weights; draw d's choice is a function of (seed, d).

  The position is every stream's position after the draw, then the number of draws, so that a
  corrupt record dropped later in the pipeline never makes the streams drift apart on resume.
  """

  _CHOICE_BLOCK = 4096  # draws chosen per random-number call

  def __init__(self, streams: Sequence[Stream], weights: Sequence[float], *, seed: int):
    weights = np.asarray(weights, np.float64)
    self._streams = list(streams)
    self._probabilities = weights / weights.sum()
    self._seed = seed
    self.position_size = sum(stream.position_size for stream in streams) + 1
    self.digest = list_digest([stream.digest for stream in streams])

  def iterate(self, position=None):
    sizes = [stream.position_size for stream in self._streams]
    if position is None:
      parts, draws = [None] * len(sizes), 0
    else:
      position = np.asarray(position, np.int64)
      if position.shape != (self.position_size,):
        raise ValueError(f"data.sources: a data position of {position.size} numbers, expected "
                         f"{self.position_size} (were the sources changed?).")
      parts = np.split(position[:-1], np.cumsum(sizes)[:-1])
      parts = [None if part[0] < 0 else part for part in parts]  # never drawn from yet
      draws = int(position[-1])
    current = [np.full(size, -1, np.int64) if part is None else np.asarray(part)
               for size, part in zip(sizes, parts)]
    iterators = [stream.iterate(part) for stream, part in zip(self._streams, parts)]
    while True:
      block, offset = divmod(draws, self._CHOICE_BLOCK)
      choices = np.random.default_rng([self._seed, block]).choice(
          len(self._streams), size=self._CHOICE_BLOCK, p=self._probabilities)
      for choice in choices[offset:]:
        record, current[choice] = next(iterators[choice])
        draws += 1
        yield record, np.concatenate([*current, [draws]])


def sharded_stream(data: settings.Data, shards: Sequence[Any], read_shard: ReadShard, *,
                   process_index: int, process_count: int, description: str,
                   identity: Sequence[Any] | None = None) -> ShardedStream:
  """A ShardedStream with the shuffling settings of `data`; its digest is of `identity` when the
  shards themselves are not the same on every process."""
  return ShardedStream(shards, read_shard, seed=data.seed, process_index=process_index,
                       process_count=process_count, cycle_length=data.cycle_length,
                       shuffle_window=data.shuffle_window, description=description,
                       identity=identity)
