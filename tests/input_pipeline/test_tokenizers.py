"""The tokenizers: id layouts, end-of-text as the largest id, truncation, graph == Python, and the
CLIP BPE tokenizer id for id against open_clip's on a varied and a fuzzed corpus."""

import dataclasses
import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import re

import numpy as np
import pytest
import tensorflow as tf

import clip_jax
import fuzz
import references
from clip_jax import settings
from input_pipeline import tokenizers
from input_pipeline.sources import synthetic

CONTEXT_LENGTH = 16
DATA = settings.data_settings(name="synthetic", image_size=8, context_length=CONTEXT_LENGTH,
                              tokenizer="words")


# --- The word tokenizer ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
  return tokenizers.create_tokenizer(DATA)


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
  world = synthetic.World.from_settings(DATA)
  captions = [synthetic.render(world, "train", index).caption for index in range(64)]
  captions += ["", "Some UNKNOWN words, 42 times", "a red star " * 20]
  in_graph = tf.data.Dataset.from_tensor_slices(captions).batch(16).map(tokenizer.tf_tokenize)
  np.testing.assert_array_equal(np.concatenate(list(in_graph.as_numpy_iterator())),
                                tokenizer.tokenize(captions))


def test_synthetic_captions_fit_the_context_without_unknown_words(tokenizer):
  world = synthetic.World.from_settings(dataclasses.replace(DATA, source=synthetic.Synthetic(
      shapes=tuple(synthetic.SHAPES), colours=tuple(synthetic.COLOURS))))
  captions = [synthetic.render(world, "train", index).caption for index in range(500)]
  tokens = tokenizer.tokenize(captions)
  assert not np.any(tokens == tokenizer.unknown_id)
  assert np.all(tokens[:, -1] == 0)  # never truncated


@pytest.mark.parametrize("changes, message", [
    (dict(context_length=1), r"data\.context_length=1"),
    (dict(tokenizer="clip_bpe", context_length=1), r"data\.context_length=1"),
    (dict(tokenizer="sentencepiece", tokenizer_model="/no/such/file.model"),
     r"data\.tokenizer_model='/no/such/file\.model': no such file"),
])
def test_bad_arguments_name_the_key(changes, message):
  with pytest.raises(ValueError, match=message):
    tokenizers.create_tokenizer(dataclasses.replace(DATA, **changes))


@pytest.mark.parametrize("changes, message", [
    (dict(tokenizer="bpe"),
     r"^data\.tokenizer='bpe'; allowed: 'clip_bpe', 'sentencepiece', 'siglip', 'gemma', "
     r"'words'\.$"),
    (dict(tokenizer="sentencepiece"),
     r"^data\.tokenizer_model='': data\.tokenizer='sentencepiece' needs the path of its model "
     r"file \(SentencePiece's \.model, Gemma's tokenizer\.json\)\.$"),
    (dict(tokenizer="sentencepiece", tokenizer_model=""), r"^data\.tokenizer_model='': "),
    (dict(tokenizer="siglip"), r"^data\.tokenizer_model='': data\.tokenizer='siglip' needs "),
])
def test_bad_settings_name_the_key(changes, message):
  config = settings.default_config()
  config.data.update(changes)
  with pytest.raises(ValueError, match=message):
    settings.parse(config)


# --- CLIP BPE against open_clip ----------------------------------------------------------------


@pytest.fixture(scope="module")
def reference():
  """open_clip's tokenizer.py, loaded as one file: `import open_clip` needs torchvision."""
  try:
    distribution = importlib.metadata.distribution("open_clip_torch")
  except importlib.metadata.PackageNotFoundError:
    pytest.skip("open_clip_torch is not installed (`make install` adds it): no reference.")
  spec = importlib.util.spec_from_file_location(
      "open_clip_tokenizer", distribution.locate_file("open_clip/tokenizer.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def clip_bpe():
  return tokenizers.create_tokenizer(dataclasses.replace(DATA, tokenizer="clip_bpe",
                                                        context_length=77))


def _token_count(reference, text):
  return len(reference._tokenizer.encode(text))  # pylint: disable=protected-access


VARIED_TEXTS = [
    # Plain captions, case, contractions, numbers, punctuation runs.
    "a photo of a cat.", "A PHOTO OF A CAT", "  A   Photo\tof\na\r\nCat  ",
    "Don't stop: we're here, they'll go; I'd've, you've, I'm, it's JOHN'S, 'S 'T 'RE 'VE 'LL 'D 'M",
    "rock'n'roll ''s '''t", "1234567 3.14159 1,000,000 2nd 42nd 0x1F 1e-10 -5", "½ ② Ⅻ ٣ ३ 五",
    "!!!??? ... --- *** (((hello))) #hashtag @user http://example.com/a_b?c=d&e=f",
    "~`!@#$%^*()_+-={}[]|\\:;\"'<>,.?/", "a_b-c.d:e/f",
    # Unicode letters, accents, combining marks, case folding corner cases.
    "日本語のキャプション、東京タワー。", "中文标题：北京的夜景", "서울의 야경",
    "مرحبا بالعالم ١٢٣",
    "नमस्ते दुनिया", "Москва ЗИМОЙ", "Ελληνικά ΚΕΦΑΛΑΊΑ", "Café naïve résumé crème brûlée",
    "Cafe\u0301 e\u0301 a\u0308\u0304", "İstanbul ıi İI", "straße STRASSE ß ẞ", "ſtart 'ſ",
    "\u212a Kelvin", "a\u0345b \u0345", "ＬＯＵＤ　ＮＯＩＳＥＳ ｶﾀｶﾅ", "ﬁsh ﬂower ǅ ǈ", "Ⓐⓑ",
    "\U00020000\U0002a6d6 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    # Emoji: modifiers, ZWJ sequences, flags, tag sequences, variation selectors.
    "👍🏽 👨‍👩‍👧‍👦 🇫🇷🇩🇪 🏴󠁧󠁢󠁳󠁣󠁴󠁿 ❤️ ☀︎ 😀😃", "I ❤ NY", "🎉party🎉",
    # HTML entities, nested escapes, tags.
    "fish &amp; chips", "&amp;amp; &amp;amp;amp;", "it&#39;s &#x27;quoted&#x27;",
    "&lt;b&gt;bold&lt;/b&gt;", "<b>tag</b> &amp; more", "&nbsp;&eacute;t&eacute; &copy; 2020",
    "AT&T R&D &foo; &#x1F600; &#128512;",
    "&EACUTE; &amp &lt", "<p>&lt;x&gt;</p>", "<i>&amp;lt;</i> <b>&amp;amp;amp;</b>",  # "<": ftfy
    # does not unescape, so it takes open_clip's two html.unescape calls.
    # Mojibake that ftfy repairs, curly quotes, dashes.
    "cafÃ©", "â€œquotedâ€\x9d", "Ã  la carte", "Ã\xa0 la", "Men’s ‘single’ “double” – — …",
    "The Mona Lisa doesnÃƒÂ¢Ã¢â€šÂ¬Ã¢â€žÂ¢t have eyebrows.",
    # Control characters, odd whitespace, NUL, surrogates.
    "tab\there", "new\nline\r\nwindows\rmac", "\x00nul\x00", "bell\x07 back\x08space",
    "\x1b[31mred\x1b[0m", "a\x0bb\x0cc\x1cd\x1de\x1ef\x1fg", "x\x85y\u2028z\u2029w", "\ufeffBOM",
    "zero\u200bwidth\u200d", "nb\xa0sp\u3000ideo", "\x7f\x80\x9f", "\ud800 lone \udfff", "\ufffd",
    # Empty and whitespace only.
    "", " ", "\t\n \r", "\u3000\xa0", "\x00",
    # Literal special tokens, matched only where open_clip's regex matches them.
    "<start_of_text>", "<end_of_text>", "a <end_of_text> b", "!<end_of_text>", "x<end_of_text>y",
    "<START_OF_TEXT>", "<start_of_text><end_of_text>", "<|endoftext|>", "<ſtart_of_text>",
    "<end_of_text>!", "<<end_of_text>>", "< end_of_text >",
]


def long_texts(reference):
  """Texts of exactly 75, 76, 77 and 500 BPE tokens (start and end of text not counted)."""
  texts = {count: " ".join(["cat"] * count) for count in (75, 76, 77, 500)}
  for count, text in texts.items():
    assert _token_count(reference, text) == count
  return list(texts.values()) + ["Ünïcödé " * 80, "a" * 2000, "x!" * 300]


def fuzz_texts(count, seed=0):
  """Seeded random strings: code points from many ranges, including astral ones, and snippets
  that exercise the cleaning and the pre-split."""
  ranges = [(0x20, 0x7e)] * 6 + [(0x00, 0x20), (0x7f, 0xff), (0x100, 0x24f), (0x300, 0x36f),
                                 (0x370, 0x52f), (0x600, 0x6ff), (0x900, 0x97f), (0x2000, 0x206f),
                                 (0x2100, 0x24ff), (0x3000, 0x30ff), (0x4e00, 0x9fff),
                                 (0xac00, 0xd7a3), (0xd800, 0xdfff), (0xfb00, 0xfb4f),
                                 (0xfe00, 0xfe0f), (0xff00, 0xffef), (0x1d400, 0x1d7ff),
                                 (0x1f300, 0x1faff), (0x20000, 0x2a6df), (0xe0000, 0xe007f),
                                 (0xf0000, 0xf00ff)]
  snippets = ["&amp;", "&lt;", "&#39;", "&quot;", "<end_of_text>", "<start_of_text>", "'s", "'ll",
              "Ã©", "â€™", " ", "  ", "\n", "\u200d", "\U0001f1eb\U0001f1f7", "&"]
  return fuzz.random_texts(count, seed, ranges, snippets, max_parts=30, snippet_rate=0.15)


def assert_same_ids(tokenizer, reference, texts):
  assert_same_rows(tokenizer.tokenize(texts),
                   reference.tokenize(texts, context_length=tokenizer.context_length).numpy(),
                   texts)


def assert_same_rows(ours, expected, texts):
  """Our ids are the reference's for every text; else the texts that differ are named."""
  assert ours.dtype == np.int32 and ours.shape == (len(texts), np.shape(expected)[1])
  different = [text for text, a, b in zip(texts, ours, expected) if not np.array_equal(a, b)]
  assert not different, f"{len(different)} of {len(texts)} differ, e.g. {different[:5]!r}"


def transformers_ids(reference, texts, context_length):
  """A transformers tokenizer's ids as SigLIP's processors ask for them: padded to the context."""
  return np.array(reference(texts, padding="max_length", max_length=context_length,
                            truncation=True)["input_ids"], np.int32)


@pytest.mark.parametrize("context_length", [77, 16, 2])
def test_clip_bpe_equals_open_clip_on_varied_texts(reference, context_length):
  texts = VARIED_TEXTS + long_texts(reference)
  assert_same_ids(tokenizers.ClipBpeTokenizer(context_length), reference, texts)


def test_clip_bpe_equals_open_clip_on_fuzzed_texts(clip_bpe, reference):
  texts = fuzz_texts(1500)
  assert_same_ids(clip_bpe, reference, texts)
  assert_same_ids(tokenizers.ClipBpeTokenizer(16), reference, texts)


def test_clip_bpe_equals_open_clip_with_tiny_caches(reference, monkeypatch):
  """Caches that fill up and start over give the same ids."""
  monkeypatch.setattr(tokenizers, "_CACHE_SIZE", 8)
  tokenizer = tokenizers.ClipBpeTokenizer(77)
  texts = fuzz_texts(100, seed=1) + VARIED_TEXTS
  for start in range(0, len(texts), 10):  # several calls, so that the caches overflow
    assert_same_ids(tokenizer, reference, texts[start:start + 10])


def test_truncation_keeps_end_of_text_last(clip_bpe):
  texts = [" ".join(["cat"] * count) for count in (75, 76, 77, 500)]
  assert [len(ids) for ids in clip_bpe.encode(texts)] == [75, 76, 77, 500]
  exact, cut, longer, much_longer = clip_bpe.tokenize(texts)
  assert exact[-1] == clip_bpe.end_id and exact[-2] != clip_bpe.end_id  # 75 + 2 fit exactly
  for tokens in (cut, longer, much_longer):
    assert tokens[0] == clip_bpe.start_id and tokens[-1] == clip_bpe.end_id
    assert np.all(tokens[1:-1] != clip_bpe.end_id) and tokens.argmax() == 76


def test_in_graph_equals_python_for_clip_bpe(clip_bpe, reference):
  texts = VARIED_TEXTS + fuzz_texts(200, seed=2)
  texts = [text for text in texts if not re.search("[\ud800-\udfff]", text)]  # not UTF-8
  dataset = tf.data.Dataset.from_tensor_slices(tf.constant([t.encode() for t in texts]))
  dataset = dataset.batch(32).map(clip_bpe.tf_tokenize, num_parallel_calls=4, deterministic=True)
  assert dataset.element_spec.shape.as_list() == [None, 77]
  assert dataset.element_spec.dtype == tf.int32
  in_graph = np.concatenate(list(dataset.as_numpy_iterator()))
  np.testing.assert_array_equal(in_graph, clip_bpe.tokenize(texts))
  np.testing.assert_array_equal(in_graph, reference.tokenize(texts).numpy())


def test_in_graph_replaces_invalid_utf8(clip_bpe):
  tokens = clip_bpe.tf_tokenize(tf.constant([b"caf\xe9", b""])).numpy()
  np.testing.assert_array_equal(tokens, clip_bpe.tokenize(["caf\ufffd", ""]))


def test_shipped_vocabulary_is_the_published_file(clip_bpe):
  assets = importlib.resources.files("input_pipeline") / "assets"
  digest = hashlib.sha256((assets / tokenizers.CLIP_BPE_VOCAB).read_bytes()).hexdigest()
  assert digest == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
  assert "MIT" in (assets / "NOTICE.md").read_text()
  assert (clip_bpe.vocab_size, clip_bpe.start_id, clip_bpe.end_id) == (49408, 49406, 49407)


# --- clip_jax.tokenize -------------------------------------------------------------------------


def test_clip_jax_tokenize_contract():
  one = clip_jax.tokenize("a photo of a cat.")
  assert one.dtype == np.int32 and one.shape == (1, 77)
  # The check value of the vocabulary's NOTICE (OpenAI's published ids).
  np.testing.assert_array_equal(one[0, :8], [49406, 320, 1125, 539, 320, 2368, 269, 49407])
  assert not one[0, 8:].any()
  many = clip_jax.tokenize(("a dog", "a cat", ""), context_length=16)
  assert many.dtype == np.int32 and many.shape == (3, 16)
  np.testing.assert_array_equal(many[1], clip_jax.tokenize("a cat", context_length=16)[0])
  assert clip_jax.tokenize([]).shape == (0, 77)
  assert "tokenize" in clip_jax.__all__


def test_clip_jax_tokenize_equals_open_clip(reference):
  texts = ["a dog", "Ünïcödé &amp; <end_of_text>", "", "a " * 100]
  for context_length in (77, 16):
    np.testing.assert_array_equal(clip_jax.tokenize(texts, context_length=context_length),
                                  reference.tokenize(texts, context_length=context_length).numpy())


# --- SentencePiece -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentencepiece_model(tmp_path_factory):
  """A tiny SentencePiece model trained on synthetic sentences: (its path, a processor)."""
  sentencepiece = pytest.importorskip("sentencepiece")
  path = references.train_sentencepiece(tmp_path_factory.mktemp("sentencepiece"),
                                        synthetic.vocabulary(), 400, 0, vocab_size=50)
  return path, sentencepiece.SentencePieceProcessor(model_file=path)


def test_sentencepiece_layout(sentencepiece_model):
  path, processor = sentencepiece_model
  tokenizer = tokenizers.create_tokenizer(dataclasses.replace(DATA, tokenizer="sentencepiece",
                                                              tokenizer_model=path))
  size = processor.get_piece_size()
  assert tokenizer.vocab_size == size + 2 and tokenizer.end_id == size + 1
  texts = ["a red star", "", "something blue in the top left", "Unseen WORDS: zebra 42!"]
  tokens = tokenizer.tokenize(texts)
  assert tokens.dtype == np.int32 and tokens.shape == (len(texts), CONTEXT_LENGTH)
  for text, row in zip(texts, tokens):
    ids = [index + 1 for index in processor.encode(text)][:CONTEXT_LENGTH - 1]
    expected = ids + [size + 1] + [0] * (CONTEXT_LENGTH - len(ids) - 1)
    np.testing.assert_array_equal(row, expected)
    assert row.argmax() == len(ids)  # end of text, where the text tower pools
  assert tokens.max() == tokenizer.end_id and tokens[tokens != tokenizer.end_id].max() <= size


def test_sentencepiece_cuts_long_text_keeping_end_last(sentencepiece_model):
  path, processor = sentencepiece_model
  tokenizer = tokenizers.SentencePieceTokenizer(path, context_length=8)
  text = "a large magenta triangle in the bottom right " * 5
  assert len(processor.encode(text)) > 8
  row = tokenizer.tokenize([text])[0]
  np.testing.assert_array_equal(row[:-1], np.array(processor.encode(text)[:7]) + 1)
  assert row[-1] == tokenizer.end_id


def test_sentencepiece_in_graph(sentencepiece_model):
  path, _ = sentencepiece_model
  tokenizer = tokenizers.SentencePieceTokenizer(path, CONTEXT_LENGTH)
  world = synthetic.World.from_settings(DATA)
  captions = [synthetic.render(world, "train", index).caption for index in range(40)] + [""]
  dataset = tf.data.Dataset.from_tensor_slices(captions).batch(8).map(tokenizer.tf_tokenize)
  assert dataset.element_spec.shape.as_list() == [None, CONTEXT_LENGTH]
  assert dataset.element_spec.dtype == tf.int32
  np.testing.assert_array_equal(np.concatenate(list(dataset.as_numpy_iterator())),
                                tokenizer.tokenize(captions))


# --- SigLIP's SentencePiece tokenizer against transformers' SiglipTokenizer ---------------------


@pytest.fixture(scope="module")
def siglip_model_file(tmp_path_factory):
  return references.siglip_sentencepiece(tmp_path_factory.mktemp("siglip_sentencepiece"))


def siglip_texts():
  """The varied and fuzzed texts as UTF-8 captions, without literal special pieces: transformers
  turns a "</s>" typed in a caption into the special id, big_vision and clip_jax do not."""
  texts = VARIED_TEXTS + fuzz_texts(700, seed=3) + [
      "A Photo Of A CAT!!", "  leading and trailing  ", "x-y_z", " ".join(["cat"] * 80)]
  return [text for text in texts if not re.search("[\ud800-\udfff]|</s>|<unk>|<pad>", text)]


@pytest.mark.parametrize("context_length", [64, 16])
def test_siglip_equals_transformers_siglip_tokenizer(siglip_model_file, context_length):
  transformers = pytest.importorskip("transformers")
  reference = transformers.SiglipTokenizer(vocab_file=siglip_model_file)
  texts = siglip_texts()
  assert len(texts) > 400
  tokenizer = tokenizers.create_tokenizer(dataclasses.replace(
      DATA, tokenizer="siglip", tokenizer_model=siglip_model_file, context_length=context_length))
  ours = tokenizer.tokenize(texts)
  assert_same_rows(ours, transformers_ids(reference, texts, context_length), texts)
  # </s> (1) ends every caption and pads it; long captions are cut with </s> last.
  assert tokenizer.end_id == 1 and np.all(ours[:, -1] == 1)
  assert np.any(ours[:, -2] != 1)  # some caption fills the context


def test_siglip_canonicalisation_equals_transformers(siglip_model_file):
  transformers = pytest.importorskip("transformers")
  reference = transformers.SiglipTokenizer(vocab_file=siglip_model_file)
  texts = siglip_texts()
  ours = [text.decode() for text in tokenizers.canonicalize(tf.constant(texts)).numpy()]
  assert ours == [reference.canonicalize_text(text) for text in texts]


def test_siglip_in_graph_equals_python(siglip_model_file):
  tokenizer = tokenizers.SigLIPTokenizer(siglip_model_file, 64)
  texts = siglip_texts()[:100]
  dataset = tf.data.Dataset.from_tensor_slices(texts).batch(16).map(tokenizer.tf_tokenize)
  assert dataset.element_spec.shape.as_list() == [None, 64]
  np.testing.assert_array_equal(np.concatenate(list(dataset.as_numpy_iterator())),
                                tokenizer.tokenize(texts))


def test_siglip_refuses_a_model_without_end_of_sequence(tmp_path):
  path = references.train_sentencepiece(tmp_path, synthetic.vocabulary(), 400, 0,
                                        vocab_size=50, eos_id=-1)
  with pytest.raises(ValueError, match=r"has no </s> piece"):
    tokenizers.SigLIPTokenizer(path, 16)


def test_an_oversized_tokenizer_model_is_refused_not_read(siglip_model_file, monkeypatch):
  from clip_jax import files  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(files, "TOKENIZER_MODEL_MAX_BYTES", 1000)
  with pytest.raises(ValueError, match=r"data\.tokenizer_model='.*spiece\.model' is [\d,]+ "
                                       r"bytes; allowed: a tokenizer model of at most 1,000 bytes"):
    tokenizers.SigLIPTokenizer(siglip_model_file, 16)


# --- SigLIP 2's Gemma tokenizer against transformers' Siglip2Tokenizer -------------------------

GEMMA_OPTIONS = {  # transformers 5.x adds no <bos> or <eos>, whatever the file asks
    "Siglip2Tokenizer's defaults": {},
    "right padding": dict(padding_side="right"),
    "asking for <bos> and <eos>": dict(padding_side="left", add_bos_token=True,
                                       add_eos_token=True),
}


@pytest.mark.parametrize("options", sorted(GEMMA_OPTIONS))
@pytest.mark.parametrize("context_length", [64, 16])
def test_gemma_equals_transformers_siglip2_tokenizer(tmp_path, options, context_length):
  transformers = pytest.importorskip("transformers")
  path = references.gemma_tokenizer(tmp_path / "gemma", **GEMMA_OPTIONS[options])
  reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "gemma"))
  assert type(reference).__name__ == "Siglip2Tokenizer"
  texts = [text for text in siglip_texts() if not re.search("<(bos|eos|mask)>", text)]
  assert len(texts) > 400
  tokenizer = tokenizers.create_tokenizer(dataclasses.replace(
      DATA, tokenizer="gemma", tokenizer_model=path, context_length=context_length))
  ours = tokenizer.tokenize(texts)
  assert_same_rows(ours, transformers_ids(reference, texts, context_length), texts)
  assert np.any(ours == 0) and not np.any(ours == 1) and not np.any(ours == 2)  # <pad>, no specials
  text_side = 0 if GEMMA_OPTIONS[options].get("padding_side") == "right" else -1
  assert np.all(ours[ours.any(axis=1), text_side] != 0)  # padded on the other side
  in_graph = tf.data.Dataset.from_tensor_slices(texts[:64]).batch(16).map(tokenizer.tf_tokenize)
  np.testing.assert_array_equal(np.concatenate(list(in_graph.as_numpy_iterator())), ours[:64])
