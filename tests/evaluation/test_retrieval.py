"""Ranks and Recall@K on hand-built features whose answers are known: ties, several captions."""

import numpy as np
import pytest

from clip_jax.evaluation import ranking
from clip_jax.evaluation import retrieval


def test_rank_counts_higher_scores_and_ties_against_the_right_answer():
  scores = np.array([[3.0, 2.0, 2.0, 1.0],   # right answer 1: one higher, one tie -> 2
                     [1.0, 5.0, 5.0, 0.0],   # two right answers tied: no penalty -> 0
                     [1.0, 1.0, 1.0, 1.0],   # everything tied -> 3
                     [0.0, np.nan, 2.0, -1.0]])  # NaN right answer: the lowest -> 3
  correct = np.array([[False, True, False, False],
                      [False, True, True, False],
                      [True, False, False, False],
                      [False, True, False, False]])
  np.testing.assert_array_equal(ranking.ranks(scores, correct), [2, 0, 3, 3])


def test_a_query_without_a_right_answer_is_never_found():
  query_ranks = ranking.ranks(np.array([[1.0, 2.0]]), np.array([[False, False]]))
  assert ranking.recall_at(query_ranks, 10**6) == 0.0


def test_rank_does_not_depend_on_the_order_of_candidates():
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 4, size=(20, 9)).astype(float)  # many ties
  correct = rng.random((20, 9)) < 0.2
  permutation = rng.permutation(9)
  np.testing.assert_array_equal(ranking.ranks(scores, correct),
                                ranking.ranks(scores[:, permutation], correct[:, permutation]))


def test_recall_at_k():
  assert ranking.recall_at(np.array([0, 1, 4, 5, 12]), 5) == pytest.approx(3 / 5)


# Three images along the axes; captions 0, 1 are image 0's, 2 image 1's, 3, 4, 5 image 2's.
IMAGES = np.eye(3)
TEXT_IMAGE = np.array([0, 0, 1, 2, 2, 2])


def test_an_image_is_found_when_any_of_its_captions_ranks_within_k():
  texts = np.array([[0.1, 0.9, 0.0],   # image 0's caption, nearer image 1
                    [0.8, 0.0, 0.0],   # image 0's caption, right
                    [0.0, 0.5, 0.0],   # image 1's, right but weaker than caption 0 for image 1
                    [0.0, 0.0, 0.2],
                    [0.0, 0.0, 0.3],
                    [0.0, 0.0, 0.1]])
  metrics = retrieval.recall_at_k(IMAGES, texts, TEXT_IMAGE, ks=(1, 2))
  # Image -> text: image 0's best caption (1) ranks first; image 1's only caption ranks second
  # (caption 0 scores 0.9 for image 1); image 2's best (4) is first.
  assert metrics["image_to_text_R@1"] == pytest.approx(2 / 3)
  assert metrics["image_to_text_R@2"] == 1.0
  # Text -> image: every caption but caption 0 finds its image first; caption 0's ranks second.
  assert metrics["text_to_image_R@1"] == pytest.approx(5 / 6)
  assert metrics["text_to_image_R@2"] == 1.0


def test_ties_count_against_the_right_answer_both_ways():
  images = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # images 0 and 1 look the same
  texts = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # so do captions 0 and 1
  metrics = retrieval.recall_at_k(images, texts, np.array([0, 1, 2]), ks=(1, 2))
  # Captions 0 and 1 each tie with the other image; image 0's caption ties with image 1's.
  assert metrics["text_to_image_R@1"] == metrics["image_to_text_R@1"] == pytest.approx(1 / 3)
  assert metrics["text_to_image_R@2"] == metrics["image_to_text_R@2"] == 1.0


def test_default_ks_and_chunked_scoring(monkeypatch):
  rng = np.random.default_rng(1)
  images, texts = rng.normal(size=(7, 4)), rng.normal(size=(15, 4))
  text_image = rng.integers(0, 7, size=15)
  expected = retrieval.recall_at_k(images, texts, text_image)
  assert sorted(expected) == sorted(f"{direction}_R@{k}" for k in (1, 5, 10)
                                    for direction in ("image_to_text", "text_to_image"))
  monkeypatch.setattr(retrieval, "QUERY_CHUNK", 4)
  assert retrieval.recall_at_k(images, texts, text_image) == expected


def test_evaluate_pairs_each_caption_with_its_image_across_batches():
  """Image i is a pixel of value i; its captions name i. Oracle encoders find every pair; one
  wrong caption is the only miss."""
  def batch(first, captions):
    images = np.arange(first, first + len(captions), dtype=np.uint8).reshape(-1, 1, 1, 1)
    width = max(map(len, captions))
    rows = [[text.encode() for text in row] + [b""] * (width - len(row)) for row in captions]
    return {"image": images, "captions": np.array(rows, dtype=object)}

  batches = [batch(0, [["0", "0"], ["1"], ["2", "2", " "]]),
             batch(3, [["3", "1"], []])]  # image 3 has a caption naming image 1; image 4 none

  def encode_image(images):
    return np.eye(5)[images.reshape(-1)]

  def tokenize(texts):
    return np.array([[int(text)] for text in texts])

  def encode_text(tokens):
    return np.eye(5)[tokens[:, 0]]

  metrics = retrieval.evaluate(encode_image, encode_text, tokenize, batches, batch_size=4)
  # 7 captions (the blank one left out); image 3's "1" finds image 1 instead.
  assert metrics["text_to_image_R@1"] == pytest.approx(6 / 7)
  # For image 1, its caption ties with image 3's "1"; image 4 has no caption, so is never found.
  assert metrics["image_to_text_R@1"] == pytest.approx(3 / 5)
  assert metrics["image_to_text_R@10"] == pytest.approx(4 / 5)
