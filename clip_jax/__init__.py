"""clip_jax: CLIP (Radford et al. 2021) in JAX and Flax.

The public API; training, evaluation and conversion are programs (`python -m clip_jax.train`).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from clip_jax import accelerators

accelerators.libtpu_as_compiler_only()  # Before anything starts JAX's backends.

from clip_jax.models import create_model
from clip_jax.models import list_models
from clip_jax import pretrained
from clip_jax.pretrained import load

__all__ = ["create_model", "list_models", "load", "tokenize"]


@functools.lru_cache(maxsize=None)
def _clip_bpe(context_length: int):
  with pretrained.input_pipeline_needed("clip_jax.tokenize"):
    from input_pipeline import tokenizers  # pylint: disable=g-import-not-at-top
  return tokenizers.ClipBpeTokenizer(context_length)


def tokenize(texts: str | Sequence[str], context_length: int = 77) -> np.ndarray:
  """int32 [N, context_length]: CLIP's BPE ids of one text or N, as open_clip.tokenize gives them.

  Start of text 49406, the text's ids, end of text 49407, padding 0; a text too long is cut so
  that end of text is last.
  """
  if isinstance(texts, str):
    texts = [texts]
  return _clip_bpe(context_length).tokenize(list(texts))
