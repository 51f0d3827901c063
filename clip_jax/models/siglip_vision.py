"""SigLIP's Vision Transformer: patches without a class token, pooled by attention.

As big_vision's ViT with `pool_type="map"` (Zhai et al. 2023, "Sigmoid Loss for Language Image
Pre-Training"), which Hugging Face's `SiglipVisionModel` and timm's `vit_*_siglip_*` reproduce: a
patch convolution with a bias, a learned positional embedding of the patches alone, the
transformer blocks, a final LayerNorm, and a multi-head attention-pooling ("MAP") head, in which
one learned probe token attends to every patch and then passes through its own MLP. There is no
`ln_pre` and no projection: the features are the head's output, of the tower's width, so the
model's `embed_dim` equals it.

FLIP keeps a random subset of the patch tokens after the positional embedding, as for CLIP's ViT
(`vision.kept_patch_indices`); the head then pools the kept patches.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from clip_jax.models import attention as attention_lib
from clip_jax.models import costs
from clip_jax.models import layers
from clip_jax.models import towers
from clip_jax.models import vision


@dataclasses.dataclass(frozen=True, kw_only=True)
class SigLIPVisionConfig:
  image_size: int
  patch_size: int
  width: int
  layers: int
  head_width: int = 64
  mlp_dim: int | None = None  # None: 4 * width.


class AttentionPoolingHead(nn.Module):
  """Tokens [B, N, W] -> [B, W]: a learned probe attends to them (queries from the probe, keys and
  values from the tokens), then a pre-LayerNorm residual MLP.

  The probe's query projection and the tokens' key/value projection are separate Dense layers
  (timm's `q` and `kv`; Hugging Face fuses the three into one `in_proj`), so the tokens are not
  multiplied by a query weight they do not need.
  """

  heads: int
  mlp_dim: int
  activation: str = "gelu_tanh"
  dtype: layers.Dtype = jnp.float32
  attention: str = "auto"
  norm_epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:                       # [B, N, W]
    width = x.shape[-1]
    init = layers.normal(width ** -0.5)
    probe = self.param("probe", init, (1, 1, width))                    # [1, 1, W]
    query = layers.Dense(width, init, self.dtype, name="query")(probe)  # [1, 1, W]
    query = jnp.broadcast_to(query, (x.shape[0], 1, width))             # [B, 1, W]
    key, value = jnp.split(layers.Dense(2 * width, init, self.dtype, name="key_value")(x), 2,
                           axis=-1)                                     # 2 x [B, N, W]
    split_heads = lambda t: t.reshape(*t.shape[:-1], self.heads, -1)    # [B, L, H, W / H]
    pooled = attention_lib.attention(split_heads(query), split_heads(key), split_heads(value),
                                     implementation=self.attention)     # [B, 1, H, W / H]
    pooled = layers.Dense(width, init, self.dtype,
                          name="out_proj")(pooled.reshape(-1, width))   # [B, W]
    residual = layers.MLP(self.mlp_dim, width ** -0.5, self.activation, self.dtype, name="mlp")(
        layers.LayerNorm(epsilon=self.norm_epsilon, name="ln")(pooled))
    return pooled + residual                                           # [B, W]


class SigLIPVisionTransformer(nn.Module):
  """Images [B, H, W, 3] -> unnormalised image embeddings [B, width].

  `patch_indices` [B, keep] (FLIP) keeps those patches of each image.
  """

  config: SigLIPVisionConfig
  embed_dim: int  # = config.width (configs.check): there is no projection.
  activation: str = "gelu_tanh"
  dtype: layers.Dtype = jnp.float32
  scan: bool = False
  remat: bool = False
  attention: str = "auto"
  norm_epsilon: float = 1e-6

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False,
               patch_indices: jax.Array | None = None) -> jax.Array:
    del train  # No dropout or BatchNorm.
    config = self.config
    width = config.width
    x = vision.PatchEmbedding(config.patch_size, width, self.dtype, use_bias=True,
                              name="conv1")(images)                     # [B, G, G, W]
    x = x.reshape(x.shape[0], -1, width)                                # [B, N, W], row-major
    positional_embedding = self.param("positional_embedding", layers.normal(width ** -0.5),
                                      (vision.num_patches(config), width))
    x = x + positional_embedding.astype(self.dtype)
    if patch_indices is not None:
      x = vision.keep_patches(x, patch_indices, prefix_tokens=0)        # [B, keep, W]
    mlp_dim = config.mlp_dim or 4 * width
    x = layers.Transformer(width, config.layers, config.head_width, mlp_dim, self.activation,
                           causal=False, dtype=self.dtype, scan=self.scan, remat=self.remat,
                           attention=self.attention, norm_epsilon=self.norm_epsilon,
                           name="transformer")(x)                       # [B, N, W]
    x = layers.LayerNorm(epsilon=self.norm_epsilon, name="ln_post")(x)
    return AttentionPoolingHead(width // config.head_width, mlp_dim, self.activation,
                                self.dtype, self.attention, self.norm_epsilon,
                                name="head")(x)                         # [B, W]


def check(config: SigLIPVisionConfig, prefix: str) -> None:
  if config.patch_size > config.image_size:
    raise ValueError(f"{prefix}vision.patch_size={config.patch_size} is larger than "
                     f"vision.image_size={config.image_size}; allowed: 1 to the image size.")
  vision.check_head_width(config, prefix)


def flops(config: SigLIPVisionConfig, embed_dim: int, mask_ratio: float = 0.0,
          remat: bool = False) -> costs.Cost:
  """The patch embedding, the blocks on the kept patches, and the head: the probe's query, the
  patches' keys and values, one query's attention, the output projection, the MLP."""
  del embed_dim  # The width: no projection.
  width, mlp_dim = config.width, config.mlp_dim or 4 * config.width
  patches = vision.num_patches(config)
  tokens = vision.kept_patch_count(patches, mask_ratio) if mask_ratio else patches
  head = costs.matmul(2 * width * width * 2 + 2 * tokens * width * 2 * width
                      + 2 * 2 * tokens * width + 2 * 2 * width * mlp_dim)
  return (vision.patch_embedding_cost(config)
          + costs.transformer(tokens, width, config.layers, mlp_dim, remat) + head)


TOWER = towers.register(towers.ImageTower(
    kind="siglip_vit", config=SigLIPVisionConfig,
    build=lambda config, embed_dim, settings: SigLIPVisionTransformer(
        config, embed_dim, **dataclasses.asdict(settings)),
    check=check, blocks=lambda config: config.layers, flops=flops, patches=vision.num_patches,
    scanned_layers="layers", features=lambda config: config.width,
    positions=lambda config: towers.Grid(("positional_embedding",), 0,
                                         config.image_size // config.patch_size),
    position_interpolation="hf"))
