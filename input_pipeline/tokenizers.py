"""Tokenizers: captions to fixed-length int32 ids, inside the tf.data graph and from Python.

Every tokenizer gives rows of `context_length` ids laid out as CLIP expects:
start-of-text, the text's ids, end-of-text, then padding (id 0). End-of-text has the largest id
of the vocabulary, because the text tower pools its features at the argmax of the ids. Text too
long for the context is cut so that end-of-text still fits in the last position.
"""

from __future__ import annotations

import functools
from typing import Protocol, Sequence

import numpy as np
import tensorflow as tf

from input_pipeline.sources import synthetic


class Tokenizer(Protocol):
  vocab_size: int
  context_length: int

  def tf_tokenize(self, texts: tf.Tensor) -> tf.Tensor:
    """string [N] -> int32 [N, context_length], usable in tf.data.Dataset.map."""

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    """N strings -> int32 [N, context_length]."""


class WordTokenizer:
  """Lower-cases, splits on anything but letters and looks each word up in a fixed vocabulary.

  Ids: padding 0, the vocabulary's words 1..V in its order, unknown word V+1, start-of-text V+2,
  end-of-text V+3 (the largest).
  """

  def __init__(self, vocabulary: Sequence[str], context_length: int):
    if context_length < 2:
      raise ValueError(f"data.context_length={context_length}: need >= 2, for the start and end "
                       "of text.")
    self.context_length = context_length
    self.unknown_id = len(vocabulary) + 1
    self.start_id = len(vocabulary) + 2
    self.end_id = len(vocabulary) + 3
    self.vocab_size = len(vocabulary) + 4
    self._table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(vocabulary), tf.string),
            tf.range(1, len(vocabulary) + 1, dtype=tf.int64)),
        default_value=self.unknown_id)

  def tf_tokenize(self, texts: tf.Tensor) -> tf.Tensor:
    words = tf.strings.split(tf.strings.regex_replace(tf.strings.lower(texts), "[^a-z]+", " "))
    ids = self._table.lookup(words)[:, :self.context_length - 2]  # ragged [N, <= L - 2]
    rows = ids.nrows()
    ids = tf.concat([tf.fill([rows, 1], tf.constant(self.start_id, tf.int64)), ids,
                     tf.fill([rows, 1], tf.constant(self.end_id, tf.int64))], axis=1)
    return tf.cast(ids.to_tensor(0, shape=[None, self.context_length]), tf.int32)

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    return self.tf_tokenize(tf.constant(list(texts), tf.string, shape=[len(texts)])).numpy()


# name -> constructor taking the context length.
TOKENIZERS = {
    "words": functools.partial(WordTokenizer, synthetic.vocabulary()),
}


def create_tokenizer(name: str, context_length: int) -> Tokenizer:
  if name not in TOKENIZERS:
    raise ValueError(f"data.tokenizer={name!r} is unknown; allowed: {', '.join(TOKENIZERS)}.")
  return TOKENIZERS[name](context_length)
