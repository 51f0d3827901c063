"""CLIP's Vision Transformer: patches and a class token through the shared transformer stack.

As OpenAI's `VisionTransformer`: a bias-free patch convolution, a learned class token and
positional embedding, `ln_pre` before the stack (CLIP's addition to ViT), and the class token's
`ln_post` output projected into the joint embedding space.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from clip_jax.models import configs
from clip_jax.models import layers


class PatchEmbedding(nn.Module):
  """OpenAI's `conv1`, a bias-free convolution with stride = kernel = patch, as one matmul.

  The same function and the same [P, P, 3, W] kernel as `nn.Conv`, so weights map unchanged; but
  XLA:CPU runs the strided convolution and its gradients about 4x slower than this product of
  non-overlapping patches and the kernel.
  """

  patch_size: int
  width: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:                  # [B, H, W, C]
    patch = self.patch_size
    batch, image_height, image_width, channels = images.shape
    kernel = self.param("kernel", layers.TORCH_DEFAULT_INIT,
                        (patch, patch, channels, self.width))          # [P, P, C, W]
    patches = images.astype(self.dtype).reshape(
        batch, image_height // patch, patch, image_width // patch, patch,
        channels)                                                      # [B, G, P, G, P, C]
    return jnp.einsum("bgphqc,pqcw->bghw", patches, kernel.astype(self.dtype))  # [B, G, G, W]


class VisionTransformer(nn.Module):
  """Images [B, H, W, 3] -> unnormalised image embeddings [B, embed_dim]."""

  config: configs.VisionTransformerConfig
  embed_dim: int
  activation: str = "gelu"
  dtype: layers.Dtype = jnp.float32
  scan: bool = False
  remat: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    del train  # No dropout or BatchNorm: training and inference compute the same function.
    config = self.config
    width, patch = config.width, config.patch_size
    scale = width ** -0.5
    x = PatchEmbedding(patch, width, self.dtype, name="conv1")(images)  # [B, G, G, W]
    batch = x.shape[0]
    x = x.reshape(batch, -1, width)                                    # [B, G*G, W], row-major
    class_embedding = self.param("class_embedding", layers.normal(scale), (width,))
    class_token = jnp.broadcast_to(class_embedding.astype(self.dtype), (batch, 1, width))
    x = jnp.concatenate([class_token, x], axis=1)                      # [B, 1 + G*G, W]
    grid = config.image_size // patch
    positional_embedding = self.param("positional_embedding", layers.normal(scale),
                                      (1 + grid * grid, width))
    x = x + positional_embedding.astype(self.dtype)
    x = layers.LayerNorm(name="ln_pre")(x)
    x = layers.Transformer(width, config.layers, config.head_width, config.mlp_dim,
                           self.activation, causal=False, dtype=self.dtype, scan=self.scan,
                           remat=self.remat, name="transformer")(x)    # [B, 1 + G*G, W]
    x = layers.LayerNorm(name="ln_post")(x[:, 0])                       # [B, W]
    proj = self.param("proj", layers.normal(scale), (width, self.embed_dim))
    return x @ proj.astype(self.dtype)                                 # [B, E]
