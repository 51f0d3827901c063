"""The shared transformer stack: causal masking, LayerNorm precision and the activations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clip_jax.models import layers

LENGTH = 8
CHANGED = 5  # The position whose input changes.


@pytest.mark.parametrize("causal", [True, False])
def test_a_later_position_changes_earlier_outputs_only_without_the_causal_mask(tiny_vit, causal):
  model, variables, _, _ = tiny_vit
  width, depth = model.config.text.width, model.config.text.layers
  stack = layers.Transformer(width, depth, causal=causal)  # With the text tower's weights.
  run_stack = jax.jit(functools.partial(
      stack.apply, {"params": variables["params"]["text"]["transformer"]}))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, LENGTH, width))             # [B, L, W]
  changed = x.at[:, CHANGED].set(jax.random.normal(jax.random.PRNGKey(2), (2, width)))
  before, after = run_stack(x), run_stack(changed)
  earlier_unchanged = np.allclose(before[:, :CHANGED], after[:, :CHANGED], atol=1e-6)
  assert earlier_unchanged == causal
  assert not np.allclose(before[:, CHANGED:], after[:, CHANGED:], atol=1e-3)


def test_layer_norm_normalises_in_float32_and_returns_the_input_dtype():
  # A large mean, as in a residual stream: the variance must survive the cancellation.
  x = (1000.0 + jax.random.normal(jax.random.PRNGKey(0), (4, 64))).astype(jnp.bfloat16)
  norm = layers.LayerNorm()
  y = norm.apply(norm.init(jax.random.PRNGKey(0), x), x)
  assert y.dtype == jnp.bfloat16
  x32 = np.asarray(x, np.float32)
  expected = (x32 - x32.mean(-1, keepdims=True)) / np.sqrt(x32.var(-1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(np.asarray(y, np.float32), expected, atol=2e-2)


def test_activations():
  x = jnp.linspace(-4.0, 4.0, 17)
  np.testing.assert_allclose(layers.ACTIVATIONS["quick_gelu"](x), x / (1 + np.exp(-1.702 * x)),
                             rtol=1e-6, atol=1e-6)
  exact = 0.5 * x * (1 + jax.scipy.special.erf(x / np.sqrt(2.0)))
  np.testing.assert_allclose(layers.ACTIVATIONS["gelu"](x), exact, rtol=1e-6, atol=1e-6)
