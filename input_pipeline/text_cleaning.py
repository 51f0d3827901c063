"""open_clip's caption cleaning, exactly, without paying for ftfy where it would change nothing.

open_clip cleans every caption with `ftfy.fix_text`, HTML-unescapes it twice, collapses whitespace
and lower-cases it. fix_text costs ~35 us a caption in Python, several times the rest of the
tokenizer, and on almost every caption changes nothing or only its curly quotes. This module
decides cheaply, from ftfy's own tables and mojibake test, when that is so; written by hand
because ftfy has no such test itself. Every other caption goes through fix_text.
"""

from __future__ import annotations

import html
import re
import re._parser as re_parser  # The stdlib's regex parser, to read ftfy's mojibake pattern.
import unicodedata

import ftfy

# Text that ftfy.fix_text and html.unescape leave alone, but for line breaks ("\r" -> "\n") that
# the whitespace collapsing erases anyway: printable ASCII but "&", and the whitespace that ftfy
# keeps (it deletes the other control characters, even \x0b and \x1c-\x1f).
PLAIN_ASCII = re.compile(r"[\t\n\x0c\r\x20-\x25\x27-\x7e]*")
_LINES = re.compile(r"[^\n]*\n|[^\n]+")  # fix_text's segments: lines with their "\n"
_SEGMENT_LENGTH = ftfy.TextFixerConfig().max_decode_length  # fix_text also cuts lines this long


def _characters_fixes_change() -> re.Pattern[str]:
  """Every character one of fix_text's character fixes acts on, from the fixes' own tables
  (ligatures, width, quotes, control and C1 characters, line breaks, surrogates, terminal
  escapes), and "&", without which HTML unescaping changes nothing."""
  tables = [ftfy.chardata.LIGATURES, ftfy.chardata.WIDTH_MAP, ftfy.chardata.CONTROL_CHARS]
  characters = "".join(chr(code) for table in tables for code in table) + "&\r\x1b\u2028\u2029"
  classes = [ftfy.chardata.SINGLE_QUOTE_RE.pattern, ftfy.chardata.DOUBLE_QUOTE_RE.pattern,
             ftfy.chardata.C1_CONTROL_RE.pattern, ftfy.fixes.SURROGATE_RE.pattern]
  return re.compile("|".join([f"[{re.escape(characters)}]"] + classes))


def _characters_every_mojibake_match_has() -> re.Pattern[str] | None:
  """A class of characters of which every match of ftfy's mojibake pattern holds at least one.

  The pattern is a list of alternatives, each a sequence of character classes. From each
  alternative this takes its one-character class with the fewest ASCII characters (fewest
  characters on a tie), and returns their union. Text without any of them cannot match, which
  saves the pattern's ~10 us search on most non-Latin text. None when the pattern is not of that
  form (a future ftfy): then every text is searched.
  """
  pattern = ftfy.badness.BADNESS_RE
  if pattern.flags & re.IGNORECASE:
    return None
  parsed = re_parser.parse(pattern.pattern, pattern.flags)
  if len(parsed) != 1 or parsed[0][0] is not re_parser.BRANCH:
    return None
  required = set()
  for alternative in parsed[0][1][1]:
    classes = [_class_codes(op, argument) for op, argument in alternative]
    classes = [codes for codes in classes if codes]
    if not classes:
      return None
    required |= min(classes, key=lambda codes: (sum(code < 128 for code in codes), len(codes)))
  return re.compile("[" + "".join(re.escape(chr(code)) for code in sorted(required)) + "]")


def _class_codes(op, argument) -> set[int] | None:
  """The code points one parsed regex item matches, if it is one plain character class."""
  if op is re_parser.LITERAL:
    return {argument}
  if op is not re_parser.IN:
    return None
  codes = set()
  for item_op, item in argument:
    if item_op is re_parser.LITERAL:
      codes.add(item)
    elif item_op is re_parser.RANGE:
      codes.update(range(item[0], item[1] + 1))
    else:  # NEGATE, CATEGORY: not a plain list of characters.
      return None
  return codes


_CHANGED_BY_FIXES = _characters_fixes_change()
_IN_EVERY_MOJIBAKE = _characters_every_mojibake_match_has()


def _has_mojibake(text: str) -> bool:
  """ftfy's mojibake test, run on each line by itself as fix_text does."""
  if _IN_EVERY_MOJIBAKE is not None and not _IN_EVERY_MOJIBAKE.search(text):
    return False
  return any(map(ftfy.badness.is_bad, _LINES.findall(text)))


def ftfy_leaves_alone(text: str) -> bool:
  """True only where ftfy.fix_text(text) == text and html.unescape(text) == text.

  fix_text applies its fixes one after another until the text stops changing, so text on which
  each fix alone changes nothing comes back unchanged: no character a character fix acts on,
  already NFC, and no mojibake.
  """
  return (len(text) < _SEGMENT_LENGTH and not _CHANGED_BY_FIXES.search(text)
          and unicodedata.is_normalized("NFC", text) and not _has_mojibake(text))


def fix_text(text: str) -> str:
  """html.unescape(html.unescape(ftfy.fix_text(text))), the same string, faster where it can be.

  Without mojibake, fix_text's first round changes only the curly quotes; if what that gives is
  text it leaves alone, its second round changes nothing and ends it.
  """
  uncurled = ftfy.fixes.uncurl_quotes(text)
  if ftfy_leaves_alone(uncurled) and (uncurled == text or not _has_mojibake(text)):
    return uncurled
  return html.unescape(html.unescape(ftfy.fix_text(text)))


def clean_words(text: str) -> list[str]:
  """The space-separated words of `clean_text(text)` (none for empty text)."""
  if not PLAIN_ASCII.fullmatch(text):
    text = fix_text(text)
  return text.lower().split()  # Lower case never makes or unmakes whitespace.


def clean_text(text: str) -> str:
  """open_clip's "lower" cleaning: ftfy, HTML unescaped twice, whitespace collapsed, lower case."""
  return " ".join(clean_words(text))
