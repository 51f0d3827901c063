"""The moving average of the parameters (`ema_decay`): it follows its formula step by step, starts
at the initial parameters, and a step that is not applied (non-finite) leaves it as it was.
Resuming and evaluating it are tested with training, in tests/test_train.py."""

import functools

import jax
import numpy as np
import optax

from clip_jax import losses
from clip_jax import sharding
from clip_jax import settings
from clip_jax import train_step as train_step_lib
import tiny_runs

DECAY = 0.75


def test_the_average_follows_its_formula_and_skips_what_is_not_applied():
  model = tiny_runs.tiny_step_model("softmax")
  mesh = sharding.create_mesh(settings.Mesh(data=1, fsdp=1), devices=jax.devices()[:1])
  optimizer = optax.adam(0.01)
  batch = tiny_runs.tiny_step_batch("tiny-vit")
  size = batch["image"].shape[1]
  state = jax.jit(functools.partial(
      train_step_lib.create_train_state, model=model, optimizer=optimizer,
      image_shape=(1, size, size, 3), text_shape=(1, batch["text"].shape[1]), ema=True))(
          jax.random.PRNGKey(0))
  step = jax.jit(train_step_lib.make_train_step(
      model, optimizer, losses.make_loss("softmax", mesh), optax.constant_schedule(0.01),
      train_step_lib.StepOptions(ema_decay=DECAY)))
  as_float64 = lambda tree: jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), tree)  # noqa: E731
  expected = as_float64(state.params)  # The average starts at the initial parameters.
  for _ in range(3):
    state, metrics = step(state, batch)
    assert bool(metrics["finite"])
    expected = jax.tree.map(lambda average, param: DECAY * average + (1 - DECAY) * param,
                            expected, as_float64(state.params))
    for name, value in jax.tree_util.tree_leaves_with_path(as_float64(state.ema_params)):
      reference = functools.reduce(lambda tree, key: tree[key.key], name, expected)
      np.testing.assert_allclose(value, reference, rtol=1e-6, atol=1e-7,
                                 err_msg=jax.tree_util.keystr(name))
  # The parameters moved away from their average, which lags behind them.
  assert any(np.abs(np.asarray(a) - np.asarray(p)).max() > 1e-4 for a, p in
             zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(state.params)))
  # A non-finite step applies no update: the average stays too.
  before = jax.tree.map(np.asarray, state.ema_params)
  state, metrics = step(state, {**batch, "image": np.full_like(batch["image"], np.nan)})
  assert not bool(metrics["finite"])
  for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(state.ema_params)):
    np.testing.assert_array_equal(new, old)
