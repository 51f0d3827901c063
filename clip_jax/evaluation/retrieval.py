"""Image-text retrieval: Recall@K both ways, with several captions per image (COCO, Flickr30k).

The convention of the COCO and Flickr30k benchmarks (and of CLIP's paper): image -> text finds
an image when any one of its captions ranks within the first K of all captions; text -> image
takes every caption as a query that must find its one image among all images. Ties count
against the right answer (`ranking.ranks`): rank = the number of wrong items scoring strictly
higher, plus those scoring the same.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from clip_jax import encoding
from clip_jax.evaluation import ranking

KS = (1, 5, 10)
QUERY_CHUNK = 1024  # Queries scored at once: bounds the [chunk, candidates] similarity block.


def _ranks(queries: np.ndarray, query_keys: np.ndarray, candidates: np.ndarray,
           candidate_keys: np.ndarray) -> np.ndarray:
  """`ranking.ranks` [Q] of queries [Q, E] among candidates [I, E], QUERY_CHUNK queries at a time.

  A candidate is a right answer to a query when their keys (int [Q] and [I]) are equal.
  """
  query_ranks = [np.zeros([0], int)]
  for start in range(0, len(queries), QUERY_CHUNK):
    chunk = slice(start, start + QUERY_CHUNK)
    scores = queries[chunk] @ candidates.T  # [chunk, I]
    query_ranks.append(ranking.ranks(scores, query_keys[chunk, None] == candidate_keys[None, :]))
  return np.concatenate(query_ranks)


def recall_at_k(image_features: np.ndarray, text_features: np.ndarray, text_image: np.ndarray,
                ks=KS) -> dict[str, float]:
  """Recall@K of image features [N, E] and caption features [M, E] both ways.

  `text_image` (int [M]) is the index of each caption's image. Scores are dot products, used as
  given (`evaluate` normalises the features first: CLIP's cosine similarity).
  Returns {"image_to_text_R@K": ..., "text_to_image_R@K": ...} for K in `ks`.
  """
  images = np.arange(len(image_features))
  ranks = {"image_to_text": _ranks(image_features, images, text_features, text_image),  # [N]
           "text_to_image": _ranks(text_features, text_image, image_features, images)}  # [M]
  return {f"{direction}_R@{k}": ranking.recall_at(direction_ranks, k)
          for direction, direction_ranks in ranks.items() for k in ks}


def evaluate(encode_image: encoding.Encoder, encode_text: encoding.Encoder,
             tokenize: encoding.Tokenize, batches: Iterable[dict[str, np.ndarray]], *,
             batch_size: int) -> dict[str, float]:
  """`recall_at_k` of images with their captions.

  `batches` yields {"image": [b, H, W, 3], "captions": bytes [b, K]} with b <= batch_size, rows
  padded with empty captions (as `input_pipeline.eval_data` gives them); blank captions are left
  out, and an image left without any counts as not found.
  """
  image_features, captions, text_image = [], [], []  # text_image: each caption's image
  num_images = 0
  for batch in batches:
    image_features.append(encoding.encode_in_batches(encode_image, batch["image"], batch_size))
    for image_captions in batch["captions"]:
      kept = [caption.decode() for caption in image_captions if caption.strip()]
      captions += kept
      text_image += [num_images] * len(kept)
      num_images += 1
  text_features = encoding.encode_in_batches(encode_text, tokenize(captions), batch_size)
  return recall_at_k(encoding.l2_normalize(np.concatenate(image_features)),
                     encoding.l2_normalize(text_features), np.array(text_image, int))
