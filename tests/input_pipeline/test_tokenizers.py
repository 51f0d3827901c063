"""The word tokenizer: id layout, end-of-text as the largest id, truncation, graph == Python."""

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import tokenizers
from input_pipeline.sources import synthetic

CONTEXT_LENGTH = 16


@pytest.fixture(scope="module")
def tokenizer():
  return tokenizers.create_tokenizer("words", CONTEXT_LENGTH)


def word_id(word):
  return synthetic.vocabulary().index(word) + 1


def test_ids_are_start_words_end_then_padding(tokenizer):
  tokens = tokenizer.tokenize(["A red-star!!", "something BLUE"])
  assert tokens.dtype == np.int32 and tokens.shape == (2, CONTEXT_LENGTH)
  expected = [tokenizer.start_id, word_id("a"), word_id("red"), word_id("star"), tokenizer.end_id]
  np.testing.assert_array_equal(tokens[0], expected + [0] * (CONTEXT_LENGTH - len(expected)))
  np.testing.assert_array_equal(tokens[1, :4], [tokenizer.start_id, word_id("something"),
                                                word_id("blue"), tokenizer.end_id])


def test_end_of_text_is_the_largest_id_and_the_argmax(tokenizer):
  assert tokenizer.end_id == tokenizer.vocab_size - 1
  assert tokenizer.vocab_size == len(synthetic.vocabulary()) + 4
  tokens = tokenizer.tokenize(["", "a star", "a large magenta triangle in the bottom right"])
  lengths = [2, 4, 10]
  np.testing.assert_array_equal(tokens.argmax(axis=-1), np.array(lengths) - 1)


def test_unknown_words_get_the_unknown_id(tokenizer):
  tokens = tokenizer.tokenize(["a zebra"])
  assert tokens[0, 2] == tokenizer.unknown_id


def test_long_text_is_cut_keeping_end_of_text_last(tokenizer):
  tokens = tokenizer.tokenize(["a red star " * 20])[0]
  assert tokens[0] == tokenizer.start_id and tokens[-1] == tokenizer.end_id
  assert np.all(tokens[1:-1] != 0) and tokens.argmax() == CONTEXT_LENGTH - 1


def test_in_graph_equals_python(tokenizer):
  world = synthetic.World.from_config(ml_collections.ConfigDict(dict(seed=0, image_size=8)))
  captions = [synthetic.render(world, "train", index).caption for index in range(64)]
  captions += ["", "Some UNKNOWN words, 42 times", "a red star " * 20]
  in_graph = tf.data.Dataset.from_tensor_slices(captions).batch(16).map(tokenizer.tf_tokenize)
  np.testing.assert_array_equal(np.concatenate(list(in_graph.as_numpy_iterator())),
                                tokenizer.tokenize(captions))


def test_synthetic_captions_fit_the_context_without_unknown_words(tokenizer):
  config = ml_collections.ConfigDict(dict(seed=0, image_size=8, synthetic=dict(
      shapes=tuple(synthetic.SHAPES), colours=tuple(synthetic.COLOURS))))
  world = synthetic.World.from_config(config)
  captions = [synthetic.render(world, "train", index).caption for index in range(500)]
  tokens = tokenizer.tokenize(captions)
  assert not np.any(tokens == tokenizer.unknown_id)
  assert np.all(tokens[:, -1] == 0)  # never truncated


@pytest.mark.parametrize("name, context_length, message", [
    ("bpe", 16, r"data\.tokenizer='bpe'.*allowed: words"),
    ("words", 1, r"data\.context_length=1"),
])
def test_bad_arguments_name_the_key(name, context_length, message):
  with pytest.raises(ValueError, match=message):
    tokenizers.create_tokenizer(name, context_length)
