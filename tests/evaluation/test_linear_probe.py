"""The linear probe on data whose best accuracy is known: separable, and noisy where the choice of
regularisation matters."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from clip_jax.evaluation import linear_probe


# Both tests use these sizes (and two classes), so that the probe's programs compile once.
DIMENSIONS, TRAIN_SIZE, VALIDATION_SIZE, TEST_SIZE = 64, 64, 256, 4000


def clusters(rng, size):
  """Two classes, as many of each, around opposite far-apart centres: linearly separable."""
  labels = np.arange(size) % 2
  signs = np.where(labels == 1, 1.0, -1.0)[:, None]
  return (5.0 * signs + rng.normal(size=(size, DIMENSIONS))).astype(np.float32), labels


def test_separable_classes_are_all_right_and_ties_choose_the_strongest_penalty():
  rng = np.random.default_rng(0)
  train, validation, test = (clusters(rng, TRAIN_SIZE), clusters(rng, VALIDATION_SIZE),
                             clusters(rng, TEST_SIZE))
  results = linear_probe.evaluate(train, validation, test, num_classes=2)
  assert results["top1"] == results["validation_top1"] == 1.0
  # Every strength is perfect on validation: the largest of the sweep wins.
  assert results["l2"] == linear_probe.COARSE_L2[-1]


def weak_signal(rng, size, separation=2.0, flipped=0.1):
  """Two classes, a signal spread thinly over every dimension, a tenth of the labels flipped.

  The best rule (the sign of the feature sum) is right with probability Phi(separation) on
  clean labels, so the best accuracy on these is BEST_ACCURACY below.
  """
  labels = rng.integers(2, size=size)
  signs = np.where(labels == 1, 1.0, -1.0)[:, None]
  features = rng.normal(size=(size, DIMENSIONS)) + signs * separation / math.sqrt(DIMENSIONS)
  labels = np.where(rng.random(size) < flipped, 1 - labels, labels)
  return features.astype(np.float32), labels


PHI_2 = 0.5 * (1 + math.erf(2.0 / math.sqrt(2)))
BEST_ACCURACY = 0.9 * PHI_2 + 0.1 * (1 - PHI_2)  # 0.882


def test_noisy_data_recovers_the_best_accuracy_by_choosing_the_penalty():
  """As many training examples as dimensions: with too weak a penalty the fit chases the noise."""
  rng = np.random.default_rng(0)
  train, validation, test = (weak_signal(rng, TRAIN_SIZE), weak_signal(rng, VALIDATION_SIZE),
                             weak_signal(rng, TEST_SIZE))
  train_features, test_features = linear_probe.standardize(train[0], test[0])
  params = linear_probe.fit(train_features, train[1], jnp.asarray(linear_probe.COARSE_L2),
                            num_classes=2)
  by_strength = linear_probe.accuracies(params, test_features, test[1])  # fitted on train only
  assert by_strength[0] < by_strength.max() - 0.05, by_strength

  results = linear_probe.evaluate(train, validation, test, num_classes=2)
  assert results["l2"] >= 0.1
  assert results["top1"] == pytest.approx(BEST_ACCURACY, abs=0.03)
  assert results["top1"] > by_strength[0] + 0.05


def test_standardize_uses_the_fitted_split_and_keeps_constant_dimensions():
  fitted = np.array([[1.0, 5.0], [3.0, 5.0]])
  standardized, other = linear_probe.standardize(fitted, np.array([[2.0, 6.0]]))
  np.testing.assert_allclose(standardized, [[-1.0, 0.0], [1.0, 0.0]])
  np.testing.assert_allclose(other, [[0.0, 1.0]])
