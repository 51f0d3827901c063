"""Linear probe: L2-regularised multinomial logistic regression on frozen image features.

As in CLIP's paper (appendix A.3): fit on the train split's features, choose the regularisation
strength by accuracy on a validation split (a log-spaced sweep, then a finer one around the
best), fit again on train + validation with that strength, report accuracy on the test split.
The paper used scikit-learn's L-BFGS; this is optax's, jitted, with the strengths of a sweep fitted
one after another inside one compiled program (memory of a single fit).

The objective, for weights W [D, C] and bias b [C] (not penalised):
  mean over examples of cross-entropy(softmax(x W + b), y) + l2 / 2 * ||W||^2,
so `l2` is per example; scikit-learn's C on N examples is l2 = 1 / (C * N).

Features are standardised (zero mean and unit variance per dimension, with the statistics of the
split being fitted). The penalty treats every weight alike, which is fair to the dimensions only
when they share a scale, and the unit scale keeps one sweep range right for any feature width
(CLIP's L2-normalised features have entries of about 1/sqrt(D)). It also conditions L-BFGS, which
then needs fewer iterations.
"""

from __future__ import annotations

import functools
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clip_jax import encoding

# The sweep's range. Much stronger penalties leave weights so small that the unpenalised bias
# (the class prior) decides, and the choice then rides on how train and test priors differ.
COARSE_L2 = 10.0 ** np.arange(-6.0, 2.0)  # 1e-6 ... 10, a decade apart
# The refinement: between the best coarse value's neighbours, a quarter decade apart; as many
# values as the coarse sweep, so that both sweeps run one compiled program.
REFINE_EXPONENTS = np.linspace(-0.875, 0.875, 8)
MAX_ITERATIONS = 1000  # L-BFGS iterations per fit, as in the paper
TOLERANCE = 1e-5  # a fit stops once the gradient norm is below this

Split = tuple[np.ndarray, np.ndarray]  # features [N, D], labels int [N]


def encode_split(encode_image: encoding.Encoder, batches: Iterable[dict[str, np.ndarray]],
                 batch_size: int) -> Split:
  """The features and labels of labelled batches ({"image", "label"}, b <= batch_size)."""
  encoded = [(encoding.encode_in_batches(encode_image, batch["image"], batch_size),
              batch["label"]) for batch in batches]
  return tuple(np.concatenate(arrays) for arrays in zip(*encoded))


def standardize(fit_features: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
  """All arrays [_, D] shifted and scaled by the mean and std of `fit_features` [N, D]."""
  mean, std = fit_features.mean(axis=0), fit_features.std(axis=0)
  std = np.where(std > 0, std, 1.0)  # a constant dimension stays constant
  return [(features - mean) / std for features in (fit_features, *others)]


@functools.partial(jax.jit, static_argnames=("num_classes",))
def fit(features: jax.Array, labels: jax.Array, l2: jax.Array, *,
        num_classes: int) -> dict[str, jax.Array]:
  """For each strength in l2 [L]: {"weights": [L, D, C], "bias": [L, C]} minimising the objective.

  The problem is strictly convex for l2 > 0, so L-BFGS from zero finds the one minimum; it stops
  at MAX_ITERATIONS or once the gradient norm is under TOLERANCE.
  """
  solver = optax.lbfgs()
  initial = {"weights": jnp.zeros((features.shape[1], num_classes), features.dtype),
             "bias": jnp.zeros((num_classes,), features.dtype)}

  def fit_one(strength):
    def objective(params):
      logits = features @ params["weights"] + params["bias"]  # [N, C]
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss + strength / 2 * jnp.sum(params["weights"] ** 2)

    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry):
      params, state = carry
      value, grad = value_and_grad(params, state=state)
      updates, state = solver.update(grad, state, params, value=value, grad=grad,
                                     value_fn=objective)
      return optax.apply_updates(params, updates), state

    def unfinished(carry):
      _, state = carry
      count = optax.tree.get(state, "count")
      return (count == 0) | ((count < MAX_ITERATIONS)
                             & (optax.tree.norm(optax.tree.get(state, "grad")) >= TOLERANCE))

    params, _ = jax.lax.while_loop(unfinished, step, (initial, solver.init(initial)))
    return params

  return jax.lax.map(fit_one, l2)


def accuracies(params: dict[str, jax.Array], features: np.ndarray,
               labels: np.ndarray) -> np.ndarray:
  """Top-1 accuracy [L] of each of the L fitted probes in `params` on features [N, D]."""
  logits = jnp.einsum("nd,ldc->lnc", features, params["weights"]) + params["bias"][:, None]
  return np.asarray(jnp.mean(jnp.argmax(logits, axis=-1) == labels, axis=-1))


def select_l2(train: Split, validation: Split, num_classes: int) -> tuple[float, float]:
  """The strength with the best validation accuracy, and that accuracy.

  A sweep over COARSE_L2, then over its best times 10 ** REFINE_EXPONENTS (kept within the
  coarse range); the best of both wins. Ties go to the larger strength: the simpler model, for
  the same evidence.
  """
  (train_features, train_labels), (validation_features, validation_labels) = train, validation
  train_features, validation_features = standardize(train_features, validation_features)

  def sweep(strengths):
    params = fit(train_features, train_labels, jnp.asarray(strengths, train_features.dtype),
                 num_classes=num_classes)
    return max(zip(accuracies(params, validation_features, validation_labels), strengths))

  coarse = sweep(COARSE_L2)
  refined = sweep(np.clip(coarse[1] * 10.0 ** REFINE_EXPONENTS, COARSE_L2[0], COARSE_L2[-1]))
  accuracy, best = max(coarse, refined)
  return float(best), float(accuracy)


def evaluate(train: Split, validation: Split, test: Split, num_classes: int) -> dict[str, float]:
  """Test accuracy of the probe refitted on train + validation with the selected strength.

  Returns {"top1": test accuracy, "validation_top1": the selection's, "l2": the strength}.
  """
  l2, validation_accuracy = select_l2(train, validation, num_classes)
  fit_features, test_features = standardize(np.concatenate([train[0], validation[0]]), test[0])
  params = fit(fit_features, np.concatenate([train[1], validation[1]]),
               jnp.asarray([l2], fit_features.dtype), num_classes=num_classes)
  return {"top1": float(accuracies(params, test_features, test[1])[0]),
          "validation_top1": validation_accuracy, "l2": l2}
