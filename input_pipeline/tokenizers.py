"""Tokenizers: captions to fixed-length int32 ids, inside the tf.data graph and from Python.

Every tokenizer gives rows of `context_length` ids laid out as CLIP expects: the text's ids,
end-of-text, then padding (id 0), with a start-of-text first where the vocabulary has one. End-of-
text has the largest id of the vocabulary, because the text tower pools its features at the
argmax of the ids. Text too long for the context is cut so that end-of-text still fits in the
last position.

`clip_bpe` is OpenAI's byte-level BPE and gives exactly the ids of open_clip's `tokenize` (3.3.0)
on any text. The candidates, on one core and benchmarks/tokenizer.py's LAION-like captions (where
open_clip does ~12k captions/s):
- keras-hub 0.32's `CLIPTokenizer`: in the tf.data graph ~700 captions/s, and 38% of its rows
  equal open_clip's (no lower case in the graph, GPT-2's digit groups, no ftfy or HTML
  unescaping); its Python path is a Hugging Face pipeline, ~12k/s and 85%. It brings keras too.
- Hugging Face `tokenizers` as the whole pipeline (an Oniguruma `Split` on OpenAI's pattern, then
  byte-level BPE) after open_clip's cleaning in Python: ~19k/s (35k/s on ASCII captions), since
  every caption pays for the Rust pipeline and its `Encoding`; and 88% exact on the tests' varied
  and fuzzed texts: literal special tokens become special ids anywhere, and Oniguruma does not
  reproduce the `regex` module's case-insensitive classes (open_clip drops U+0345).
- Chosen: open_clip's own cleaning and pre-split (ftfy, `html`, the `regex` module and its
  pattern), exact by construction. `text_cleaning` skips ftfy (~35 us a caption) where it would
  change nothing or only curly quotes, deciding so from ftfy's own tables and mojibake test; ids
  are cached per space-free chunk of the cleaned text (no pre-split piece contains a space); Hugging
  Face's Rust BPE runs once per batch for the pieces never seen before (benchmarks/tokenizer.py;
  its figures are in benchmarks/RESULTS.md). In tf.data it runs as one `tf.numpy_function` per
  batch.

`sentencepiece` runs a user's SentencePiece model in the graph with tensorflow_text, in CLIP's id
layout; `siglip` runs SigLIP's SentencePiece model as SigLIP was trained (canonicalised text, its
own ids, `</s>` at the end and as padding); `words` is the word-level tokenizer of the built-in
synthetic dataset.
"""

from __future__ import annotations

import gzip
import json
import importlib.resources
import string
from typing import Callable, Protocol, Sequence

import numpy as np
import regex
import tensorflow as tf
import tokenizers as hf_tokenizers

from clip_jax import files
from clip_jax import settings
from input_pipeline import text_cleaning
from input_pipeline.sources import synthetic

CLIP_BPE_VOCAB = "bpe_simple_vocab_16e6.txt.gz"  # In input_pipeline/assets/, with its NOTICE.md.
CLIP_CONTEXT_LENGTH = 77


class Tokenizer(Protocol):
  vocab_size: int
  context_length: int

  def tf_tokenize(self, texts: tf.Tensor) -> tf.Tensor:
    """string [N] -> int32 [N, context_length], usable in tf.data.Dataset.map."""

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    """N strings -> int32 [N, context_length]."""


def _check_context_length(context_length: int) -> None:
  if context_length < 2:
    raise ValueError(f"data.context_length={context_length}: need >= 2, for the end of text and "
                     "what comes before it.")


class WordTokenizer:
  """Lower-cases, splits on anything but letters and looks each word up in a fixed vocabulary.

  Ids: padding 0, the vocabulary's words 1..V in its order, unknown word V+1, start-of-text V+2,
  end-of-text V+3 (the largest).
  """

  def __init__(self, vocabulary: Sequence[str], context_length: int):
    _check_context_length(context_length)
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


# --- CLIP BPE ---------------------------------------------------------------------------------

START_OF_TEXT = "<start_of_text>"  # open_clip's names; OpenAI's are <|startoftext|>, same ids.
END_OF_TEXT = "<end_of_text>"
# OpenAI's pre-split pattern with open_clip's special tokens as the first alternative, matched
# case-insensitively like open_clip does. Nothing in it matches whitespace.
_SPLIT_PATTERN = regex.compile(
    START_OF_TEXT + "|" + END_OF_TEXT +
    r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
_CACHE_SIZE = 1 << 20  # Entries per cache; a full cache starts over.


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> character map, so that BPE symbols are never whitespace or controls."""
  visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
             *range(ord("®"), ord("ÿ") + 1)]
  others = [byte for byte in range(256) if byte not in visible]
  return dict(zip(visible + others, map(chr, visible + [256 + n for n in range(len(others))])))


def clip_bpe_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
  """({token: id}, merges by rank), built exactly as open_clip's SimpleTokenizer builds them."""
  data = (importlib.resources.files("input_pipeline") / "assets" / CLIP_BPE_VOCAB).read_bytes()
  lines = gzip.decompress(data).decode("utf-8").split("\n")
  merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
  symbols = list(_bytes_to_unicode().values())
  tokens = (symbols + [symbol + "</w>" for symbol in symbols] + ["".join(merge) for merge in merges]
            + [START_OF_TEXT, END_OF_TEXT])
  return {token: index for index, token in enumerate(tokens)}, merges


class ClipBpeTokenizer:
  """OpenAI CLIP's tokenizer, id for id open_clip's `tokenize`; see the module docstring.

  Ids: padding 0, BPE tokens 0..49405 (id 0 is also the byte "!"), start-of-text 49406, end-of-
  text 49407. Thread-safe, for tf.data's parallel map.
  """

  def __init__(self, context_length: int = CLIP_CONTEXT_LENGTH):
    _check_context_length(context_length)
    vocabulary, merges = clip_bpe_vocabulary()
    self.context_length = context_length
    self.vocab_size = len(vocabulary)
    self.start_id = vocabulary[START_OF_TEXT]
    self.end_id = vocabulary[END_OF_TEXT]
    # Byte-level BPE of one pre-split piece per "word"; no splitting, no special tokens here.
    self._bpe = hf_tokenizers.Tokenizer(
        hf_tokenizers.models.BPE(vocabulary, merges, end_of_word_suffix="</w>"))
    self._bpe.pre_tokenizer = hf_tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                     use_regex=False)
    # Tuples, not lists: the garbage collector stops tracking tuples of ints, so a million cached
    # entries do not slow down its full collections.
    self._chunk_cache = {}  # space-free part of a cleaned text -> its ids
    self._piece_cache = self._new_piece_cache()  # pre-split piece -> its ids

  def _new_piece_cache(self) -> dict[str, tuple[int, ...]]:
    return {START_OF_TEXT: (self.start_id,), END_OF_TEXT: (self.end_id,)}

  def _encode_chunks(self, chunks: set[str], chunk_cache: dict[str, tuple[int, ...]]) -> None:
    """Adds the ids of `chunks` to `chunk_cache`; BPE runs once, in Rust, for all new pieces."""
    if len(self._piece_cache) > _CACHE_SIZE:
      self._piece_cache = self._new_piece_cache()  # Replaced, not cleared: other threads read it.
    piece_cache = self._piece_cache
    splits = [(chunk, _SPLIT_PATTERN.findall(chunk)) for chunk in chunks]
    # Membership tests, not `set - piece_cache.keys()`: that difference iterates the whole cache.
    new_pieces = list({piece for _, split in splits for piece in split
                       if piece not in piece_cache})
    if new_pieces:
      # One sequence of pre-split words (cheaper than one sequence each): BPE works within a
      # word, and `word_ids` tells whose each id is.
      encoding = self._bpe.encode(new_pieces, is_pretokenized=True, add_special_tokens=False)
      piece_ids = [[] for _ in new_pieces]
      for word, index in zip(encoding.word_ids, encoding.ids):
        piece_ids[word].append(index)
      piece_cache.update(zip(new_pieces, map(tuple, piece_ids)))
    for chunk, split in splits:
      chunk_cache[chunk] = tuple(index for piece in split for index in piece_cache[piece])

  def encode(self, texts: Sequence[str]) -> list[list[int]]:
    """The BPE ids of each text: no start or end of text, not truncated."""
    if len(self._chunk_cache) > _CACHE_SIZE:
      self._chunk_cache = {}  # Replaced, not cleared: other threads may be reading it.
    cache = self._chunk_cache
    chunked = [text_cleaning.clean_words(text) for text in texts]
    missing = {chunk for chunks in chunked for chunk in chunks if chunk not in cache}
    if missing:
      self._encode_chunks(missing, cache)
    return [[index for chunk in chunks for index in cache[chunk]] for chunks in chunked]

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    """int32 [N, context_length]: start, ids cut to context_length - 2, end, padding."""
    flat, lengths = [], []
    for ids in self.encode(texts):
      ids = ids[:self.context_length - 2]
      flat.append(self.start_id)
      flat += ids
      flat.append(self.end_id)
      lengths.append(len(ids) + 2)
    tokens = np.zeros((len(lengths), self.context_length), np.int32)
    tokens[np.arange(self.context_length) < np.array(lengths, np.int32)[:, None]] = flat
    return tokens

  def tf_tokenize(self, texts: tf.Tensor) -> tf.Tensor:
    return _in_graph(self.tokenize, texts, self.context_length)


def _in_graph(tokenize: Callable[[list[str]], np.ndarray], texts: tf.Tensor,
              context_length: int) -> tf.Tensor:
  """A tokenizer that runs in Python, in tf.data: one call per batch, string [N] -> int32
  [N, context_length]. Captions arrive as bytes; invalid UTF-8 becomes U+FFFD rather than
  failing the pipeline."""
  tokens = tf.numpy_function(
      lambda batch: tokenize([text.decode("utf-8", "replace") for text in batch]), [texts],
      tf.int32, stateful=False)
  return tf.ensure_shape(tokens, [None, context_length])


# --- SentencePiece ----------------------------------------------------------------------------


def _load_sentencepiece(model_path: str):
  """A SentencePiece model file run by tensorflow_text (in the graph, and eagerly from Python)."""
  # Imported here: only the SentencePiece tokenizers need tensorflow_text's op library.
  import tensorflow_text  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(model_path):
    raise ValueError(f"data.tokenizer_model={model_path!r}: no such file.")
  model = files.read_tokenizer_model(model_path, "data.tokenizer_model")
  return tensorflow_text.SentencepieceTokenizer(model=model, out_type=tf.int32)


class SentencePieceTokenizer:
  """A SentencePiece model (e.g. a multilingual one) run in the tf.data graph by tensorflow_text.

  Ids: padding 0, SentencePiece id i as i + 1, end-of-text S + 1 for a model of S pieces (the
  largest); vocab_size S + 2. No start-of-text: the text tower pools at end-of-text, which under
  the causal mask already sees the whole text, so a start token would only take a position. The
  model's own BOS/EOS pieces are not added; its unknown piece maps like any other.
  """

  def __init__(self, model_path: str, context_length: int):
    _check_context_length(context_length)
    self._sentencepiece = _load_sentencepiece(model_path)
    pieces = int(self._sentencepiece.vocab_size())
    self.context_length = context_length
    self.end_id = pieces + 1
    self.vocab_size = pieces + 2

  def tf_tokenize(self, texts: tf.Tensor) -> tf.Tensor:
    ids = self._sentencepiece.tokenize(texts)[:, :self.context_length - 1] + 1  # ragged
    ids = tf.concat([ids, tf.fill([ids.nrows(), 1], self.end_id)], axis=1)
    return ids.to_tensor(0, shape=[None, self.context_length])

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    return self.tf_tokenize(tf.constant(list(texts), tf.string, shape=[len(texts)])).numpy()


# Python's string.punctuation (ASCII), which SigLIP's tokenizer removes, as an RE2 class.
_PUNCTUATION = "[" + "".join("\\" + character for character in string.punctuation) + "]"
# What Python's str.isspace() calls whitespace (RE2's \s is ASCII only), collapsed to one space.
_WHITESPACE = (r"[\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}"
               r"\x{2029}\x{202f}\x{205f}\x{3000}]+")


def _lower(texts: tf.Tensor) -> tf.Tensor:
  """Unicode lower case as Python's str.lower. tf.strings.lower(encoding="utf-8") ends a string
  at its first NUL, so the pieces between NULs are lowered, each with a NUL after it, joined,
  and the last NUL cut (an op's separator attribute cannot hold a NUL either)."""
  nul = tf.constant("\x00")
  pieces = tf.strings.split(texts, sep="\x00")                          # ragged [N, pieces]
  pieces = tf.ragged.map_flat_values(
      lambda flat: tf.strings.join([tf.strings.lower(flat, encoding="utf-8"), nul]), pieces)
  joined = tf.strings.reduce_join(pieces, axis=-1)                      # [N]
  length = tf.strings.length(joined)
  return tf.strings.substr(joined, tf.zeros_like(length), length - 1)


def canonicalize(texts: tf.Tensor) -> tf.Tensor:
  """SigLIP's text canonicalisation in the graph: lower case, ASCII punctuation removed,
  whitespace runs collapsed to a space, the ends stripped (transformers' `canonicalize_text`,
  the same string as its Python on any text: tests/input_pipeline/test_tokenizers.py)."""
  texts = _lower(texts)
  texts = tf.strings.regex_replace(texts, _PUNCTUATION, "")
  texts = tf.strings.regex_replace(texts, _WHITESPACE, " ")
  return tf.strings.regex_replace(texts, "^ | $", "")


class SigLIPTokenizer:
  """SigLIP's tokenizer: its SentencePiece model (English C4's 32,000 pieces) on canonicalised
  text, end-of-sequence `</s>` appended, and `</s>` again as the padding, as big_vision trains
  with (eos "sticky", pad_value 1) and transformers' `SiglipTokenizer` gives (the text tower reads
  the last position). A text too long is cut so that `</s>` is last. Ids are the model's own.

  Unlike transformers, a literal "</s>" or "<unk>" in a caption is text, not a special id.
  """

  def __init__(self, model_path: str, context_length: int):
    _check_context_length(context_length)
    self._sentencepiece = _load_sentencepiece(model_path)
    self.context_length = context_length
    self.vocab_size = int(self._sentencepiece.vocab_size())
    self.end_id = int(self._sentencepiece.string_to_id("</s>"))
    if self._sentencepiece.id_to_string(self.end_id).numpy() != b"</s>":
      raise ValueError(f"data.tokenizer_model={model_path!r} has no </s> piece, which SigLIP's "
                       "tokenizer ends and pads every caption with; allowed: SigLIP's "
                       "SentencePiece model, or data.tokenizer='sentencepiece'.")

  def tf_tokenize(self, texts: tf.Tensor) -> tf.Tensor:
    ids = self._sentencepiece.tokenize(canonicalize(texts))[:, :self.context_length - 1]
    ids = tf.concat([ids, tf.fill([ids.nrows(), 1], self.end_id)], axis=1)  # ragged
    return ids.to_tensor(self.end_id, shape=[None, self.context_length])

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    return self.tf_tokenize(tf.constant(list(texts), tf.string, shape=[len(texts)])).numpy()


# --- Gemma (SigLIP 2) ------------------------------------------------------------------------

class GemmaTokenizer:
  """SigLIP 2's tokenizer: Gemma's byte-fallback BPE (its Hugging Face tokenizer.json) on
  lower-cased text, as transformers' `Siglip2Tokenizer` (5.x) runs it: no `<bos>` or `<eos>`
  (whatever add_bos_token and add_eos_token say), `<pad>` on the side that the tokenizer_config.json
  beside the file names (padding_side; Siglip2Tokenizer's default, left), a text too long cut at
  its end. Ids are the model's own.

  Run by Hugging Face `tokenizers` in Python (one `tf.numpy_function` per batch in tf.data), as
  `clip_bpe` is: tensorflow_text has no reader for tokenizer.json.
  """

  def __init__(self, tokenizer_file: str, context_length: int):
    _check_context_length(context_length)
    if not tf.io.gfile.exists(tokenizer_file):
      raise ValueError(f"data.tokenizer_model={tokenizer_file!r}: no such file.")
    text = files.read_tokenizer_model(tokenizer_file, "data.tokenizer_model").decode("utf-8")
    self._tokenizer = hf_tokenizers.Tokenizer.from_str(text)
    own = self._tokenizer.normalizer
    self._tokenizer.normalizer = hf_tokenizers.normalizers.Sequence(
        [hf_tokenizers.normalizers.Lowercase(), *([own] if own is not None else [])])
    self._tokenizer.no_truncation()
    self._tokenizer.no_padding()
    options_file = files.path(tokenizer_file).parent / files.TOKENIZER_OPTIONS
    options = (json.loads(files.read_tokenizer_model(options_file, "tokenizer_config.json"))
               if options_file.exists() else {})
    pad = options.get("pad_token", "<pad>")
    pad = pad["content"] if isinstance(pad, dict) else pad
    if self._tokenizer.token_to_id(pad) is None:
      raise ValueError(f"data.tokenizer_model={tokenizer_file!r} has no {pad} token; allowed: a "
                       "Gemma tokenizer.json (SigLIP 2's).")
    self.context_length = context_length
    self.vocab_size = self._tokenizer.get_vocab_size()
    self.pad_id = self._tokenizer.token_to_id(pad)
    self.pad_left = options.get("padding_side", "left") == "left"

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    tokens = np.full((len(texts), self.context_length), self.pad_id, np.int32)
    for row, encoding in enumerate(self._tokenizer.encode_batch(list(texts),
                                                                add_special_tokens=False)):
      ids = encoding.ids[:self.context_length]
      if self.pad_left:
        tokens[row, self.context_length - len(ids):] = ids
      else:
        tokens[row, :len(ids)] = ids
    return tokens

  def tf_tokenize(self, texts: tf.Tensor) -> tf.Tensor:
    return _in_graph(self.tokenize, texts, self.context_length)


for _kind in (
    settings.TokenizerKind(name="clip_bpe",
                           make=lambda data: ClipBpeTokenizer(data.context_length)),
    settings.TokenizerKind(
        name="sentencepiece", needs_model=True,
        make=lambda data: SentencePieceTokenizer(data.tokenizer_model, data.context_length)),
    settings.TokenizerKind(
        name="siglip", needs_model=True,
        make=lambda data: SigLIPTokenizer(data.tokenizer_model, data.context_length)),
    settings.TokenizerKind(
        name="gemma", needs_model=True,
        make=lambda data: GemmaTokenizer(data.tokenizer_model, data.context_length)),
    settings.TokenizerKind(
        name="words", make=lambda data: WordTokenizer(synthetic.vocabulary(), data.context_length)),
):
  settings.TOKENIZERS.register(_kind)


def create_tokenizer(data: settings.Data) -> Tokenizer:
  """The tokenizer named by data.tokenizer, for data.context_length (and data.tokenizer_model)."""
  return settings.TOKENIZERS.get(data.tokenizer, "data.tokenizer").make(data)
