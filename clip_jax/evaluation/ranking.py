"""Ranks of the right answers among scored candidates, shared by classification and retrieval.

The tie rule: a candidate's rank is the number of candidates scoring strictly higher plus every
tie, broken against it. So the result never depends on the candidates' order, and a model that
scores everything alike (a collapsed one) finds nothing, where `argmax` would credit it with
whichever class comes first.
"""

from __future__ import annotations

import numpy as np


def ranks(scores: np.ndarray, correct: np.ndarray) -> np.ndarray:
  """int [Q]: per query (row of scores [Q, I]), the 0-based rank of its best correct candidate.

  rank = the number of wrong candidates (`~correct`, bool [Q, I]) scoring at least as high as the
  best-scoring correct one; ties between two correct candidates do not matter. NaN scores count
  as the lowest, so they tie against the right answer. A query without a correct candidate is
  never found: its rank is the largest integer.
  """
  scores = np.nan_to_num(scores, nan=-np.inf)
  best_correct = np.max(np.where(correct, scores, -np.inf), axis=1, keepdims=True)  # [Q, 1]
  query_ranks = np.sum(~correct & (scores >= best_correct), axis=1)
  return np.where(correct.any(axis=1), query_ranks, np.iinfo(query_ranks.dtype).max)


def recall_at(query_ranks: np.ndarray, k: int) -> float:
  """The fraction of queries whose best correct candidate ranks within the first k."""
  return float(np.mean(query_ranks < k))
