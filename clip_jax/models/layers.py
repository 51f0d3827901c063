"""The transformer parts shared by both towers: one residual block and one stack of them.

Names follow OpenAI's `ResidualAttentionBlock` (`ln_1`, `attn/in_proj`, `attn/out_proj`, `ln_2`,
`mlp/c_fc`, `mlp/c_proj`) so that PyTorch weights map one to one; Dense kernels are [in, out], the
transpose of PyTorch's Linear weight. Initialisation is OpenAI's `initialize_parameters` for the
text transformer, here used by both towers (OpenAI's ViT blocks keep PyTorch's default init).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# PyTorch's default Conv init (kaiming_uniform with a = sqrt(5), i.e. uniform with bound
# fan_in^-0.5), which OpenAI's code keeps for every convolution.
TORCH_DEFAULT_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def quick_gelu(x: jax.Array) -> jax.Array:
  """OpenAI's sigmoid approximation of GELU, which their released weights were trained with."""
  return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # torch.nn.GELU: the exact erf form.
}


def float32_accumulating_dot(lhs, rhs, dimension_numbers, precision=None,
                             preferred_element_type=None, **kwargs) -> jax.Array:
  """`lax.dot_general` that sums and emits float32, cast back to the inputs' dtype.

  For bfloat16 inputs the sums keep float32's precision, and XLA:CPU's bfloat16 kernels run about
  twice as fast when they emit float32 (benchmarks/train_step.py); GPUs and TPUs accumulate in
  float32 anyway. For float32 inputs it is the plain dot.
  """
  del preferred_element_type  # Always float32.
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                             preferred_element_type=jnp.float32, **kwargs).astype(lhs.dtype)


def dense(features: int, dtype: Dtype, **kwargs) -> nn.Dense:
  """`nn.Dense` computing in `dtype` with float32 sums."""
  return nn.Dense(features, dtype=dtype, dot_general=float32_accumulating_dot, **kwargs)


def normal(stddev: float) -> nn.initializers.Initializer:
  """An untruncated normal, as `torch.nn.init.normal_`."""
  return nn.initializers.normal(stddev=stddev)


class LayerNorm(nn.LayerNorm):
  """LayerNorm computed in float32 and cast back: bfloat16 statistics are too coarse.

  The variance is the two-pass mean((x - mean)^2), as PyTorch computes it: Flax's fast
  E[x^2] - E[x]^2 loses the variance to cancellation when the mean is large.
  """

  epsilon: float = 1e-5  # PyTorch's default.
  use_fast_variance: bool = False

  def __call__(self, x: jax.Array) -> jax.Array:
    return super().__call__(x.astype(jnp.float32)).astype(x.dtype)


class MultiHeadAttention(nn.Module):
  """Self-attention with one fused q/k/v projection, laid out like PyTorch's `in_proj_weight`."""

  heads: int
  out_std: float
  causal: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [B, L, W]
    width = x.shape[-1]
    qkv = dense(3 * width, self.dtype, kernel_init=normal(width ** -0.5),
                name="in_proj")(x)                                       # [B, L, 3W]
    query, key, value = jnp.split(qkv, 3, axis=-1)                       # 3 x [B, L, W]
    split_heads = lambda t: t.reshape(*t.shape[:-1], self.heads, -1)     # [B, L, H, W / H]
    # Logits and softmax in float32 whatever the compute dtype.
    x = jax.nn.dot_product_attention(split_heads(query), split_heads(key), split_heads(value),
                                     is_causal=self.causal)              # [B, L, H, W / H]
    return dense(width, self.dtype, kernel_init=normal(self.out_std),
                 name="out_proj")(x.reshape(qkv.shape[:-1] + (width,)))  # [B, L, W]


class MLP(nn.Module):
  """The position-wise feed-forward layer: W -> mlp_dim -> W."""

  mlp_dim: int
  out_std: float
  activation: str = "gelu"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [B, L, W]
    width = x.shape[-1]
    x = dense(self.mlp_dim, self.dtype, kernel_init=normal((2 * width) ** -0.5),
              name="c_fc")(x)                                            # [B, L, mlp_dim]
    x = ACTIVATIONS[self.activation](x)
    return dense(width, self.dtype, kernel_init=normal(self.out_std),
                 name="c_proj")(x)                                       # [B, L, W]


class ResidualAttentionBlock(nn.Module):
  """A pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

  `depth` is the number of blocks in the stack: the residual output projections start with std
  W^-0.5 (2 depth)^-0.5 so that the residual stream's variance does not grow with depth.
  """

  heads: int
  mlp_dim: int
  depth: int
  activation: str = "gelu"
  causal: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [B, L, W]
    out_std = x.shape[-1] ** -0.5 * (2 * self.depth) ** -0.5
    x = x + MultiHeadAttention(self.heads, out_std, self.causal, self.dtype,
                               name="attn")(LayerNorm(name="ln_1")(x))
    x = x + MLP(self.mlp_dim, out_std, self.activation, self.dtype,
                name="mlp")(LayerNorm(name="ln_2")(x))
    return x                                                             # [B, L, W]


def _scan_body(block: ResidualAttentionBlock, x: jax.Array, _) -> tuple[jax.Array, None]:
  return block(x), None


class Transformer(nn.Module):
  """`layers` residual blocks, either unrolled (`resblocks_{i}`) or scanned (`resblocks`).

  Scanning compiles one block instead of `layers` copies and stacks the parameters on a leading
  layer axis; remat recomputes each block's activations in the backward pass instead of storing
  them. Neither changes the function computed.
  """

  width: int
  layers: int
  head_width: int = 64
  mlp_dim: int | None = None  # None: 4 * width.
  activation: str = "gelu"
  causal: bool = False
  dtype: Dtype = jnp.float32
  scan: bool = False
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [B, L, W]
    block = ResidualAttentionBlock
    if self.remat:  # Inside a scan, CSE cannot undo the recomputation: skip its prevention.
      block = nn.remat(block, prevent_cse=not self.scan)
    settings = dict(heads=self.width // self.head_width, mlp_dim=self.mlp_dim or 4 * self.width,
                    depth=self.layers, activation=self.activation, causal=self.causal,
                    dtype=self.dtype)
    if self.scan:
      scanned = nn.scan(_scan_body, variable_axes={"params": 0}, split_rngs={"params": True},
                        length=self.layers)
      x, _ = scanned(block(**settings, name="resblocks"), x, None)
      return x
    for index in range(self.layers):
      x = block(**settings, name=f"resblocks_{index}")(x)
    return x                                                             # [B, L, W]
