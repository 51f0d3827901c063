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
from jax.ad_checkpoint import checkpoint_name

from clip_jax.models import attention as attention_lib

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
    # The tanh form: Flax's default, so big_vision's SigLIP checkpoints were trained with it
    # (transformers: "gelu_pytorch_tanh", torch.nn.GELU(approximate="tanh")).
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


@jax.custom_vjp
def _affine(inputs: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """inputs [..., I] @ kernel [I, O] + bias [O], in the inputs' dtype with float32 sums.

  The kernel and bias stay float32 outside: the kernel is cast to the inputs' dtype for the dot,
  whose float32 result takes the bias before it is rounded.
  """
  outputs = jax.lax.dot_general(inputs, kernel.astype(inputs.dtype),
                                (((inputs.ndim - 1,), (0,)), ((), ())),
                                preferred_element_type=jnp.float32)              # [..., O]
  return (outputs + bias).astype(inputs.dtype)


def _affine_forward(inputs, kernel, bias):
  return _affine(inputs, kernel, bias), (inputs, kernel)


def _affine_backward(residuals, grad):  # grad [..., O], in the inputs' dtype
  """The three gradients from dots and sums of the compute dtype that add up in float32.

  JAX's own transpose of `_affine` would carry the float32 cotangent of the final cast, so the
  backward dots would mix float32 and bfloat16 operands and run in float32, and the bias gradient
  would be a bfloat16 sum, which XLA:CPU splits into a slow tree of windows. Written out, every
  dot runs at bfloat16's speed, and the parameters' gradients come out in float32 unrounded
  (benchmarks/train_step.py). In float32 this is exactly what autodiff computes.
  """
  inputs, kernel = residuals
  batch_axes = tuple(range(inputs.ndim - 1))
  grad_inputs = jax.lax.dot_general(grad, kernel.astype(grad.dtype),
                                    (((grad.ndim - 1,), (1,)), ((), ())),
                                    preferred_element_type=jnp.float32)        # [..., I]
  grad_kernel = jax.lax.dot_general(inputs, grad, ((batch_axes, batch_axes), ((), ())),
                                    preferred_element_type=jnp.float32)        # [I, O]
  grad_bias = jnp.sum(grad.astype(jnp.float32), axis=batch_axes)               # [O]
  return grad_inputs.astype(inputs.dtype), grad_kernel, grad_bias


_affine.defvjp(_affine_forward, _affine_backward)


class Dense(nn.Module):
  """`nn.Dense` (same parameters: `kernel` [in, out], `bias` [out]) computing in `dtype`.

  Its dots sum in float32 and the bias is added before rounding: for bfloat16 the sums keep
  float32's precision, and XLA:CPU's bfloat16 kernels run about twice as fast when they emit
  float32; GPUs and TPUs accumulate in float32 anyway. Written here because `nn.Dense` adds the
  bias in the compute dtype and leaves the gradients to JAX's transpose (see `_affine_backward`).
  """

  features: int
  kernel_init: nn.initializers.Initializer
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [..., I]
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    x = checkpoint_name(x.astype(self.dtype), f"{self.name}.inputs")
    return checkpoint_name(_affine(x, kernel, bias), f"{self.name}.outputs")  # [..., O]


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
  attention: str = "auto"  # clip_jax.models.attention.IMPLEMENTATIONS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [B, L, W]
    width = x.shape[-1]
    qkv = Dense(3 * width, normal(width ** -0.5), self.dtype, name="in_proj")(x)  # [B, L, 3W]
    query, key, value = jnp.split(qkv, 3, axis=-1)                       # 3 x [B, L, W]
    split_heads = lambda t: t.reshape(*t.shape[:-1], self.heads, -1)     # [B, L, H, W / H]
    x = attention_lib.attention(split_heads(query), split_heads(key), split_heads(value),
                                causal=self.causal,
                                implementation=self.attention)           # [B, L, H, W / H]
    return Dense(width, normal(self.out_std), self.dtype,
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
    x = Dense(self.mlp_dim, normal((2 * width) ** -0.5), self.dtype,
              name="c_fc")(x)                                            # [B, L, mlp_dim]
    x = ACTIVATIONS[self.activation](x)
    return Dense(width, normal(self.out_std), self.dtype,
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
  attention: str = "auto"
  norm_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [B, L, W]
    out_std = x.shape[-1] ** -0.5 * (2 * self.depth) ** -0.5
    norm = lambda name: LayerNorm(epsilon=self.norm_epsilon, name=name)
    x = x + MultiHeadAttention(self.heads, out_std, self.causal, self.dtype, self.attention,
                               name="attn")(norm("ln_1")(x))
    x = x + MLP(self.mlp_dim, out_std, self.activation, self.dtype,
                name="mlp")(norm("ln_2")(x))
    return x                                                             # [B, L, W]


def _scan_body(block: ResidualAttentionBlock, x: jax.Array, _) -> tuple[jax.Array, None]:
  return block(x), None


# What a scanned block keeps for its backward pass without remat: the block's input (the scan's
# carry), the q/k/v projection, the attention's output and its projection, and the MLP's hidden
# layer before the activation: 10 x [B, L, W] in the compute dtype. The backward pass recomputes
# the LayerNorms, the attention's probabilities and the activation from them: no matmul of the
# projections. Without a policy the scan keeps every value autodiff saves, stacked over the layers
# (float32 statistics and probabilities, the activation's parts): about 3x as much.
SCANNED_BLOCK_SAVES = ("in_proj.outputs", "out_proj.inputs", "out_proj.outputs", "c_fc.outputs")


class Transformer(nn.Module):
  """`layers` residual blocks, either unrolled (`resblocks_{i}`) or scanned (`resblocks`).

  Scanning compiles one block instead of `layers` copies and stacks the parameters on a leading
  layer axis; remat recomputes each block's activations in the backward pass instead of storing
  them. Without remat a scanned block saves `SCANNED_BLOCK_SAVES`, about what XLA keeps of
  unrolled blocks. None of these changes the function computed.
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
  attention: str = "auto"
  norm_epsilon: float = 1e-5  # The LayerNorms': PyTorch's default, OpenAI's; SigLIP's 1e-6.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [B, L, W]
    block = ResidualAttentionBlock
    # Inside a scan, CSE cannot undo the recomputation: skip its prevention.
    if self.remat:
      block = nn.remat(block, prevent_cse=not self.scan)
    elif self.scan:
      block = nn.remat(block, prevent_cse=False, policy=jax.checkpoint_policies.
                       save_only_these_names(*SCANNED_BLOCK_SAVES))
    settings = dict(heads=self.width // self.head_width, mlp_dim=self.mlp_dim or 4 * self.width,
                    depth=self.layers, activation=self.activation, causal=self.causal,
                    dtype=self.dtype, attention=self.attention, norm_epsilon=self.norm_epsilon)
    if self.scan:
      scanned = nn.scan(_scan_body, variable_axes={"params": 0}, split_rngs={"params": True},
                        length=self.layers)
      x, _ = scanned(block(**settings, name="resblocks"), x, None)
      return x
    for index in range(self.layers):
      x = block(**settings, name=f"resblocks_{index}")(x)
    return x                                                             # [B, L, W]
