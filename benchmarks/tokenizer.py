"""Captions per second of the CLIP BPE tokenizer on one core, against open_clip's, in one run.

  python -m benchmarks.tokenizer --captions=20000

Both tokenizers see the same deterministic stream of LAION-like alt texts (mixed lengths, product
titles, file names, prices, curly quotes, HTML entities, some non-Latin scripts and emoji), each
measured three ways: "cold", a new tokenizer (empty caches) on the measured captions, so every
first-seen word pays for its BPE; "steady", a tokenizer that has first tokenized the
`--warmup_captions` captions before them in the stream, as in a running training job, where
frequent words are cached and rare ones are not; "warm", the same captions a second time, every
word cached. The process is pinned to one core and Hugging Face's Rust thread pool to one thread
before anything is imported that could start it.
"""

from __future__ import annotations

import os

os.environ["RAYON_NUM_THREADS"] = "1"  # Must precede the import of `tokenizers`.
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import importlib.metadata
import importlib.util
import random
import time

import numpy as np

from benchmarks import common
from input_pipeline import tokenizers

_COMMON = ("a the of and in with for on to at by from new old best cheap free my your our this "
           "is are be how what why when photo image picture stock vector illustration icon logo "
           "background white black red blue green yellow pink grey gold silver wooden vintage "
           "modern beautiful cute little big small large set pack kit style design home house "
           "kitchen garden room bedroom bathroom living wall art print poster canvas frame women "
           "men girl boy baby kids family wedding dress shirt shoes bag jacket ring necklace "
           "watch car truck bike boat road city street park beach sea lake mountain forest tree "
           "flower rose sky sunset sunrise night winter summer spring autumn christmas birthday "
           "party cake food coffee tea wine dog cat bird horse fish book map flag card gift toy "
           "game sale price shipping size color leather cotton silk steel glass plastic paper "
           "hand made handmade original premium quality high resolution hd isolated closeup "
           "view top side front back left right inch cm mm kg pcs").split()
_SCRIPTS = ("夕焼けの海と山の風景写真", "北京天安门广场的夜景", "서울 남산타워 야경 사진",
            "منظر طبيعي للجبال عند الغروب", "मुंबई में समुद्र तट पर सूर्यास्त",
            "Москва зимой, Красная площадь", "Αθήνα Ακρόπολη τη νύχτα",
            "İstanbul Boğazı'nda gün batımı", "Ελληνικό χωριό")
_UNICODE_BITS = ("café", "München", "crème brûlée", "naïve", "Ångström", "São Paulo", "Zürich",
                 "piñata", "résumé", "façade", "Ærø")
_EMOJI = ("❤️", "😍", "🔥", "👍🏽", "👨‍👩‍👧", "🇫🇷", "✨", "🎄", "🐶", "☀️")


def _pseudo_word(rng: random.Random) -> str:
  """A made-up brand, place or surname: the long tail of words a real corpus keeps introducing."""
  syllables = ("ka ri to na mi lo ve sa be dor han el ix qu zen ster berg ton ville ley mar co "
               "tri nova fle ax ur on pro tec lux gen").split()
  return "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))


def laion_like_captions(count: int, seed: int = 0) -> list[str]:
  """`count` deterministic alt-text-like captions; a quarter are not ASCII, 5% hold entities."""
  rng = random.Random(seed)
  tail = [_pseudo_word(rng) for _ in range(20_000)]

  def word() -> str:
    if rng.random() < 0.8:
      return rng.choice(_COMMON)
    if rng.random() < 0.5:  # Zipf-like: a few tail words often, most of them rarely.
      return tail[min(int(rng.paretovariate(1.0)) - 1, len(tail) - 1)]
    return rng.choice(tail)

  def words(n: int) -> str:
    return " ".join(word() for _ in range(n))

  captions = []
  for _ in range(count):
    kind = rng.random()
    if kind < 0.30:
      text = words(rng.randint(2, 12))
    elif kind < 0.45:
      text = f"{words(rng.randint(3, 8)).title()} - Stock Photo #{rng.randint(1000, 99999999)}"
    elif kind < 0.55:
      brand = _pseudo_word(rng).title()
      text = (f"{brand} {words(rng.randint(2, 6)).title()} Men’s {rng.choice(['S', 'M', 'XL'])}"
              f" | ${rng.randint(5, 500)}.{rng.randint(0, 99):02d} Free Shipping")
    elif kind < 0.60:
      text = f"IMG_{rng.randint(0, 9999):04d}.JPG"
    elif kind < 0.75:
      text = ". ".join(words(rng.randint(8, 25)).capitalize() for _ in range(rng.randint(1, 4)))
    elif kind < 0.80:
      text = (f"{words(rng.randint(2, 6))} &amp; {words(rng.randint(2, 6))} "
              f"&quot;{rng.choice(_COMMON)}&quot;")
    elif kind < 0.87:
      text = f"{words(rng.randint(2, 6))} {rng.choice(_UNICODE_BITS)} {words(rng.randint(1, 5))}"
    elif kind < 0.92:
      text = f"{rng.choice(_SCRIPTS)} {rng.randint(1990, 2024)}"
    elif kind < 0.96:
      text = f"{words(rng.randint(2, 8))} {rng.choice(_EMOJI)}{rng.choice(_EMOJI)}"
    else:
      text = (f"  {words(rng.randint(3, 10)).upper()}\n{words(rng.randint(1, 5))}"
              f"\t({rng.randint(1, 99)})")
    captions.append(text)
  return captions


def load_open_clip_tokenizer_module():
  """open_clip's tokenizer.py as a module of its own (the package imports torchvision), or None."""
  try:
    path = importlib.metadata.distribution("open_clip_torch").locate_file("open_clip/tokenizer.py")
  except importlib.metadata.PackageNotFoundError:
    return None
  spec = importlib.util.spec_from_file_location("open_clip_tokenizer", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def captions_per_second(tokenize, captions: list[str], batch_size: int) -> float:
  start = time.perf_counter()
  for index in range(0, len(captions), batch_size):
    tokenize(captions[index:index + batch_size])
  return len(captions) / (time.perf_counter() - start)


def measure(create, warmup: list[str], captions: list[str],
            batch_size: int) -> tuple[float, float, float]:
  """(cold, steady, warm) captions/s, as the module docstring defines them."""
  tokenize = create()
  cold = captions_per_second(tokenize, captions, batch_size)
  tokenize = create()
  captions_per_second(tokenize, warmup, batch_size)
  steady = captions_per_second(tokenize, captions, batch_size)
  return cold, steady, captions_per_second(tokenize, captions, batch_size)


KINDS = ("cold", "steady", "warm")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--captions", type=int, default=20_000)
  parser.add_argument("--warmup_captions", type=int, default=100_000,
                      help="Captions tokenized before the steady-state measurement.")
  parser.add_argument("--batch_size", type=int, default=256, help="Captions per tokenize call.")
  parser.add_argument("--rounds", type=int, default=3, help="Best of this many, interleaved.")
  parser.add_argument("--no_record", action="store_true", help="Do not append to RESULTS.md.")
  args = parser.parse_args()

  os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
  stream = laion_like_captions(args.warmup_captions + args.captions)
  warmup, captions = stream[:args.warmup_captions], stream[args.warmup_captions:]
  keeps = {"all": lambda caption: True, "ASCII only": str.isascii,
           "not ASCII": lambda caption: not caption.isascii()}
  corpora = {name: (list(filter(keep, warmup)), list(filter(keep, captions)))
             for name, keep in keeps.items()}
  candidates = {"clip_jax": lambda: tokenizers.ClipBpeTokenizer(77).tokenize}
  open_clip_tokenizer = load_open_clip_tokenizer_module()
  if open_clip_tokenizer is not None:
    candidates["open_clip"] = open_clip_tokenizer.SimpleTokenizer
  header, rows = ["captions", "count"], []
  for name in candidates:
    header += [f"{name} {kind}/s" for kind in KINDS]
  if len(candidates) == 2:
    header += [f"speed-up {kind}" for kind in KINDS]
  for corpus_name, (corpus_warmup, corpus) in corpora.items():
    # The best of interleaved rounds: the least disturbed by other work on a shared machine.
    rates = {name: (0.0,) * len(KINDS) for name in candidates}
    for _ in range(args.rounds):
      for name, create in candidates.items():
        rates[name] = tuple(map(max, rates[name],
                                measure(create, corpus_warmup, corpus, args.batch_size)))
    row = [corpus_name, f"{len(corpus):,}"]
    row += [f"{rate:,.0f}" for kind_rates in rates.values() for rate in kind_rates]
    if len(rates) == 2:
      ours, reference = rates.values()
      row += [f"{mine / theirs:.1f}x" for mine, theirs in zip(ours, reference)]
    rows.append(row)
    print(f"{corpus_name}: " + ", ".join(row[2:]), flush=True)
  notes = ""
  if len(candidates) == 2:
    expected = open_clip_tokenizer.tokenize(captions).numpy()
    identical = np.mean(np.all(tokenizers.ClipBpeTokenizer(77).tokenize(captions) == expected,
                               axis=-1))
    notes = f" Rows identical to open_clip's: {identical:.2%}."
  table = common.format_table(header, rows)
  print(table)
  print(notes.strip())
  if not args.no_record:
    common.append_results(
        "CLIP BPE tokenizer",
        table,
        f"Captions/s on one core (one Rust thread) for {args.captions:,} LAION-like captions "
        "(`benchmarks.tokenizer.laion_like_captions`) and their ASCII and non-ASCII parts, in "
        f"batches of {args.batch_size}, context length 77; best of {args.rounds} interleaved "
        f"rounds. Cold = a new tokenizer (empty caches); steady = after the "
        f"{args.warmup_captions:,} captions before them in the same stream, as in a running "
        "job; warm = the same captions again (every word cached)." + notes)


if __name__ == "__main__":
  main()
