"""The caption cleaning against ftfy itself: its shortcuts give exactly what ftfy.fix_text and the
two html.unescape calls give, on every code point and on fuzzed text full of mojibake."""

import html
import random

import ftfy
import fuzz
import pytest

from input_pipeline import text_cleaning


def ftfy_and_unescape(text):
  return html.unescape(html.unescape(ftfy.fix_text(text)))


def open_clip_cleaning(text):
  """open_clip's `_clean_lower`: ftfy, HTML unescaped twice, whitespace collapsed, lower case."""
  return " ".join(ftfy_and_unescape(text).strip().split()).lower()


MOJIBAKE = ["sÃ³", "voilÃ le travail", "Ã©tÃ©", "â€œquotedâ€\x9d", "â€™", "Ã¢â‚¬â„¢", "Ã ",
            "Â£5", "Ã\xa0 la", "\x93hi\x94", "ÐºÐ¾ÑÐºÐ°", "Ãƒ", "Ã¼ber",
            "Œ1", "œ ", "é’", "‘Ã©’", "ﬁne", "ＡＢＣ", "e\u0301", "&eacute;", "&amp;lt;"]


def fuzz_texts(count, seed):
  """Seeded strings over characters ftfy acts on or treats as signs of mojibake, and others."""
  ranges = [(0x20, 0x7e)] * 4 + [(0x80, 0xff)] * 3 + [(0x100, 0x17f), (0x300, 0x36f),
                                                      (0x370, 0x3ff), (0x400, 0x4ff),
                                                      (0x2000, 0x206f), (0x2100, 0x22ff),
                                                      (0x3040, 0x30ff), (0x4e00, 0x4eff),
                                                      (0xfb00, 0xfb4f), (0xff00, 0xffef),
                                                      (0x1f300, 0x1f5ff)]
  snippets = MOJIBAKE + ["РґРѕР±СЂРѕ", "Ã\n", "’", "“", "”", "\n", "\r\n", " ", "&", "<",
                         "\x1b[31m"]
  return fuzz.random_texts(count, seed, ranges, snippets, max_parts=24, snippet_rate=0.2)


def test_known_mojibake_and_fixes_take_ftfy():
  for text in MOJIBAKE:
    assert not text_cleaning.ftfy_leaves_alone(text), repr(text)
    assert text_cleaning.fix_text(text) == ftfy_and_unescape(text), repr(text)
  assert text_cleaning.fix_text("Men’s “best” café") == "Men's \"best\" café"  # quotes alone


@pytest.mark.parametrize("seed", range(4))
def test_fix_text_equals_ftfy_on_fuzzed_text(seed):
  texts = fuzz_texts(5000, seed)
  shortcuts = 0
  for text in texts:
    assert text_cleaning.fix_text(text) == ftfy_and_unescape(text), repr(text)
    shortcuts += text_cleaning.ftfy_leaves_alone(ftfy.fixes.uncurl_quotes(text))
  # Both paths are exercised: a good share of the texts takes the shortcut, many do not.
  assert 0.1 * len(texts) < shortcuts < 0.9 * len(texts)


def test_every_code_point_ftfy_leaves_alone_is_left_alone():
  """Each character of the first two planes between letters, alone and at a line's start."""
  accepted = 0
  for code in range(0x20000):
    for text in (f"a{chr(code)}b", f"a\n{chr(code)} b"):
      if text_cleaning.ftfy_leaves_alone(text):
        accepted += 1
        assert ftfy.fix_text(text) == text and html.unescape(text) == text, hex(code)
  assert accepted > 2 * 0x1e000  # most characters are left alone, and take the shortcut


def test_mojibake_prefilter_is_built_and_exact():
  """The characters every mojibake match holds are read from ftfy's pattern; text with none of
  them is never mojibake, even where the rest is Latin-1 punctuation and letters."""
  prefilter = text_cleaning._IN_EVERY_MOJIBAKE  # pylint: disable=protected-access
  assert prefilter is not None and prefilter.search("Ã©") and not prefilter.search("日本 ’ ok")
  rng = random.Random(0)
  alphabet = [chr(code) for code in range(0x20, 0x2200) if not prefilter.search(chr(code))]
  for _ in range(20000):
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
    assert not ftfy.badness.is_bad(text), repr(text)


def test_plain_ascii_path_matches_full_cleaning():
  """On text that PLAIN_ASCII accepts, ftfy and html.unescape change nothing that whitespace
  collapsing keeps; and every ASCII character it rejects is one ftfy changes."""
  rng = random.Random(0)
  alphabet = [chr(code) for code in range(128)]
  accepted = [char for char in alphabet if text_cleaning.PLAIN_ASCII.fullmatch(char)]
  assert "&" not in accepted and "\x0b" not in accepted and "\x1c" not in accepted
  for char in set(alphabet) - set(accepted) - {"&"}:
    assert ftfy.fix_text(f"a{char}b") != f"a{char}b", repr(char)
  tricky = list("<>;#'\"\\[]!?. \t\n\r") * 4
  for _ in range(5000):
    text = "".join(rng.choice(accepted + tricky) for _ in range(rng.randint(0, 120)))
    assert text_cleaning.PLAIN_ASCII.fullmatch(text)
    assert html.unescape(text) == text
    assert ftfy.fix_text(text) == text.replace("\r\n", "\n").replace("\r", "\n"), repr(text)
    assert text_cleaning.clean_text(text) == open_clip_cleaning(text), repr(text)


def test_clean_text_equals_open_clip_cleaning():
  for text in fuzz_texts(3000, seed=10) + MOJIBAKE:
    assert text_cleaning.clean_text(text) == open_clip_cleaning(text), repr(text)
