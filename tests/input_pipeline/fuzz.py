"""Seeded random strings for the tokenizer and cleaning tests: characters drawn from code-point
ranges, with literal snippets mixed in."""

import random


def random_texts(count, seed, ranges, snippets, *, max_parts, snippet_rate):
  """`count` strings of 0..max_parts parts, each a snippet (with probability `snippet_rate`) or a
  character from one of `ranges` ((low, high) code points; repeat a range to weight it)."""
  rng = random.Random(seed)
  texts = []
  for _ in range(count):
    parts = []
    for _ in range(rng.randint(0, max_parts)):
      if rng.random() < snippet_rate:
        parts.append(rng.choice(snippets))
      else:
        low, high = rng.choice(ranges)
        parts.append(chr(rng.randint(low, high)))
    texts.append("".join(parts))
  return texts
