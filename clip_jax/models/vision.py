"""CLIP's Vision Transformer: patches and a class token through the shared transformer stack.

As OpenAI's `VisionTransformer`: a bias-free patch convolution, a learned class token and
positional embedding, `ln_pre` before the stack (CLIP's addition to ViT), and the class token's
`ln_post` output projected into the joint embedding space.

FLIP (Li et al. 2023, "Scaling Language-Image Pre-training via Masking") trains on a random
subset of each image's patches: the tower keeps the patch tokens `patch_indices` names (drawn by
`kept_patch_indices`) after the positional embedding is added (so the kept ones still know where
they are) and before `ln_pre`, keeping the class token, as open_clip's `PatchDropout`. The
number kept is a Python int, so shapes stay static and each ratio compiles once; the tower's cost
falls with it.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from clip_jax.models import costs
from clip_jax.models import layers
from clip_jax.models import towers


@dataclasses.dataclass(frozen=True, kw_only=True)
class VisionTransformerConfig:
  image_size: int
  patch_size: int
  width: int
  layers: int
  head_width: int = 64
  mlp_dim: int | None = None  # None: 4 * width.


class PatchEmbedding(nn.Module):
  """OpenAI's `conv1`, a convolution with stride = kernel = patch, as one matmul.

  The same function and the same [P, P, 3, W] kernel as `nn.Conv`, so weights map unchanged; but
  XLA:CPU runs the strided convolution and its gradients about 4x slower than this product of
  non-overlapping patches and the kernel. Pixels past the last whole patch are left out, as a
  "valid" convolution leaves them (SigLIP's 14 px patches of 384 px images: 27 x 27 patches).
  OpenAI's has no bias; SigLIP's has one.
  """

  patch_size: int
  width: int
  dtype: layers.Dtype = jnp.float32
  use_bias: bool = False

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:                  # [B, H, W, C]
    patch = self.patch_size
    batch, image_height, image_width, channels = images.shape
    rows, columns = image_height // patch, image_width // patch
    kernel = self.param("kernel", layers.TORCH_DEFAULT_INIT,
                        (patch, patch, channels, self.width))          # [P, P, C, W]
    patches = images[:, :rows * patch, :columns * patch].astype(self.dtype).reshape(
        batch, rows, patch, columns, patch, channels)                  # [B, G, P, G, P, C]
    x = jnp.einsum("bgphqc,pqcw->bghw", patches, kernel.astype(self.dtype))  # [B, G, G, W]
    if self.use_bias:
      x = x + self.param("bias", nn.initializers.zeros, (self.width,)).astype(self.dtype)
    return x


def kept_patch_count(num_patches: int, ratio: float) -> int:
  """round((1 - ratio) * num_patches), at least one: the patches left after dropping `ratio`."""
  if not 0.0 <= ratio < 1.0:
    raise ValueError(f"patch_dropout={ratio!r}; allowed: 0 <= ratio < 1.")
  return max(1, round((1.0 - ratio) * num_patches))


def kept_patch_indices(rng: jax.Array, batch: int, num_patches: int, ratio: float) -> jax.Array:
  """[B, keep] int32: for each image, the `kept_patch_count` patches that dropping `ratio` of its
  `num_patches` leaves, drawn uniformly, ascending.

  A random permutation per image (the argsort of uniform noise), cut to its first `keep`
  entries. Sorting them keeps the tokens in the image's row-major order: attention does not care,
  but a kept sequence is then a subsequence of the full one.
  """
  keep = kept_patch_count(num_patches, ratio)
  noise = jax.random.uniform(rng, (batch, num_patches))                # [B, N]
  return jnp.sort(jnp.argsort(noise, axis=-1)[:, :keep], axis=-1)       # [B, keep]


def keep_patches(tokens: jax.Array, indices: jax.Array, prefix_tokens: int = 1) -> jax.Array:
  """Tokens [B, prefix_tokens + N, W] -> the prefix (a class token) and each image's patch tokens
  at its `indices` [B, keep]: [B, prefix_tokens + keep, W]."""
  patches = jnp.take_along_axis(tokens[:, prefix_tokens:], indices[..., None], axis=1)
  return jnp.concatenate([tokens[:, :prefix_tokens], patches], axis=1)


class VisionTransformer(nn.Module):
  """Images [B, H, W, 3] -> unnormalised image embeddings [B, embed_dim].

  `patch_indices` [B, keep] (FLIP, drawn by `kept_patch_indices`) keeps those patches of each
  image, after the positional embedding; without them the tower sees every patch.
  """

  config: VisionTransformerConfig
  embed_dim: int
  activation: str = "gelu"
  dtype: layers.Dtype = jnp.float32
  scan: bool = False
  remat: bool = False
  attention: str = "auto"
  norm_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False,
               patch_indices: jax.Array | None = None) -> jax.Array:
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
    if patch_indices is not None:
      x = keep_patches(x, patch_indices)                               # [B, 1 + keep, W]
    norm = lambda name: layers.LayerNorm(epsilon=self.norm_epsilon, name=name)
    x = norm("ln_pre")(x)
    x = layers.Transformer(width, config.layers, config.head_width, config.mlp_dim,
                           self.activation, causal=False, dtype=self.dtype, scan=self.scan,
                           remat=self.remat, attention=self.attention,
                           norm_epsilon=self.norm_epsilon, name="transformer")(x)  # [B, L, W]
    x = norm("ln_post")(x[:, 0])                                       # [B, W]
    proj = self.param("proj", layers.normal(scale), (width, self.embed_dim))
    return x @ proj.astype(self.dtype)                                 # [B, E]


def check_head_width(config, prefix: str) -> None:
  """A ViT's (CLIP's or SigLIP's) heads must split its width evenly."""
  if config.width % config.head_width:
    raise ValueError(f"{prefix}vision.head_width={config.head_width} does not divide the width "
                     f"{config.width}; allowed: its divisors.")


def check(config: VisionTransformerConfig, prefix: str) -> None:
  if config.image_size % config.patch_size:
    raise ValueError(f"{prefix}vision.patch_size={config.patch_size} does not divide "
                     f"vision.image_size={config.image_size}; allowed: its divisors.")
  check_head_width(config, prefix)


def num_patches(config) -> int:
  """Whole patches only, as a "valid" convolution: (384 // 14)^2 = 729 for SigLIP's So400m/14 at
  384; a ViT's (CLIP's or SigLIP's) record."""
  return (config.image_size // config.patch_size) ** 2


def patch_embedding_cost(config) -> costs.Cost:
  """The patch embedding of every patch (FLIP drops patches after it), on the data."""
  return costs.matmul(2 * num_patches(config) * config.patch_size ** 2 * 3 * config.width,
                      input_is_data=True)


def flops(config: VisionTransformerConfig, embed_dim: int, mask_ratio: float = 0.0,
          remat: bool = False) -> costs.Cost:
  """The patch embedding, the blocks on the class token and the kept patches, the projection."""
  patches = num_patches(config)
  tokens = 1 + (kept_patch_count(patches, mask_ratio) if mask_ratio else patches)
  return (patch_embedding_cost(config)
          + costs.transformer(tokens, config.width, config.layers, config.mlp_dim, remat)
          + costs.matmul(2 * config.width * embed_dim))


TOWER = towers.register(towers.ImageTower(
    kind="vit", config=VisionTransformerConfig,
    build=lambda config, embed_dim, settings: VisionTransformer(
        config, embed_dim, **dataclasses.asdict(settings)),
    check=check, blocks=lambda config: config.layers, flops=flops, patches=num_patches,
    scanned_layers="layers",
    positions=lambda config: towers.Grid(("positional_embedding",), 1,
                                         config.image_size // config.patch_size)))
