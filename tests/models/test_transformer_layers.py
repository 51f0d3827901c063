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


def _dense_and_gradients(dtype, tokens=6, width=8, features=16):
  """Dense's outputs and the gradients of <outputs, cotangent> w.r.t. inputs, kernel and bias,
  and the same from float64 numpy on the values the layer actually sees."""
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  x = jax.random.normal(keys[0], (2, tokens, width)).astype(dtype)              # [B, L, I]
  dense = layers.Dense(features, layers.normal(1.0), dtype)
  params = dense.init(keys[1], x)["params"]
  params["bias"] = jax.random.normal(keys[2], (features,))
  cotangent = jax.random.normal(keys[3], (2, tokens, features)).astype(dtype)   # [B, L, O]
  outputs, pullback = jax.vjp(lambda x, p: dense.apply({"params": p}, x), x, params)
  grad_x, grad_params = pullback(cotangent)

  x64, c64 = np.asarray(x, np.float64), np.asarray(cotangent, np.float64)
  k64 = np.asarray(params["kernel"].astype(dtype), np.float64)
  expected = {"outputs": x64 @ k64 + np.asarray(params["bias"], np.float64),
              "grad_x": c64 @ k64.T, "kernel": np.einsum("bli,blo->io", x64, c64),
              "bias": c64.sum(axis=(0, 1))}
  actual = {"outputs": outputs, "grad_x": grad_x, "kernel": grad_params["kernel"],
            "bias": grad_params["bias"]}
  return actual, expected


def test_dense_in_float32_is_the_affine_map_and_its_exact_gradients():
  actual, expected = _dense_and_gradients(jnp.float32)
  for key, value in actual.items():
    assert value.dtype == jnp.float32, key
    np.testing.assert_allclose(value, expected[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_dense_in_bfloat16_sums_in_float32_and_returns_float32_parameter_gradients():
  # 2 x 2048 tokens: a bfloat16 sum (8 bits of mantissa) of the bias gradient would be off by ~1%.
  actual, expected = _dense_and_gradients(jnp.bfloat16, tokens=2048)
  assert actual["outputs"].dtype == actual["grad_x"].dtype == jnp.bfloat16
  assert actual["kernel"].dtype == actual["bias"].dtype == jnp.float32
  for key in ("outputs", "grad_x"):  # Rounded once to bfloat16 at the end.
    np.testing.assert_allclose(np.asarray(actual[key], np.float64), expected[key],
                               rtol=1e-2, atol=2e-2, err_msg=key)
  for key in ("kernel", "bias"):  # Never rounded to bfloat16.
    np.testing.assert_allclose(actual[key], expected[key], rtol=1e-4, atol=1e-3, err_msg=key)


def test_dense_in_bfloat16_has_only_bfloat16_dots_forward_and_backward():
  # A float32 operand would make XLA run the dot in float32, at half bfloat16's speed on CPU.
  dense = layers.Dense(16, layers.normal(1.0), jnp.bfloat16)
  x = jnp.ones((2, 3, 8), jnp.bfloat16)
  params = dense.init(jax.random.PRNGKey(0), x)

  def loss(params, x):
    return jnp.sum(dense.apply(params, x).astype(jnp.float32) ** 2)

  text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).as_text()
  dots = [line for line in text.splitlines() if "dot_general" in line]
  assert len(dots) == 3  # Forward, inputs' gradient, kernel's gradient.
  for line in dots:
    operand_types = line.rsplit(":", 1)[1].split("->")[0]
    assert "f32" not in operand_types and "bf16" in operand_types, line
