"""An image tower defined outside clip_jax and registered as a plug-in (docs/extending.md): each
patch embedded, the kept patches' mean projected. tests/test_extending.py trains, loads and plans
a model with it; `model.plugins=("plugin_tower",)` imports this module wherever the run's config
is parsed."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from clip_jax.models import costs
from clip_jax.models import towers
from clip_jax.models import vision


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeanPatchConfig:
  image_size: int
  patch_size: int
  width: int


class MeanPatchTower(nn.Module):
  """Images [B, H, W, 3] -> features [B, embed_dim]."""
  config: MeanPatchConfig
  embed_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False,
               patch_indices: jax.Array | None = None) -> jax.Array:
    del train
    patch = self.config.patch_size
    batch, height, width, channels = images.shape
    patches = images.reshape(batch, height // patch, patch, width // patch, patch, channels)
    patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(batch, -1, patch * patch * channels)
    if patch_indices is not None:  # FLIP: [B, keep] of the patches
      patches = jnp.take_along_axis(patches, patch_indices[..., None], axis=1)
    tokens = nn.gelu(nn.Dense(self.config.width, dtype=self.dtype)(patches))  # [B, N, W]
    return nn.Dense(self.embed_dim, dtype=self.dtype)(tokens.mean(axis=1))      # [B, E]


def num_patches(config: MeanPatchConfig) -> int:
  return (config.image_size // config.patch_size) ** 2


def check(config: MeanPatchConfig, prefix: str) -> None:
  if config.image_size % config.patch_size:
    raise ValueError(f"{prefix}vision.patch_size={config.patch_size} does not divide "
                     f"vision.image_size={config.image_size}; allowed: its divisors.")


def flops(config: MeanPatchConfig, embed_dim: int, mask_ratio: float,
          remat: bool) -> costs.Cost:
  del remat
  patches = num_patches(config)
  kept = vision.kept_patch_count(patches, mask_ratio) if mask_ratio else patches
  return (costs.matmul(2 * kept * config.patch_size ** 2 * 3 * config.width, input_is_data=True)
          + costs.matmul(2 * config.width * embed_dim))


TOWER = towers.register(towers.ImageTower(
    kind="mean_patch", config=MeanPatchConfig,
    build=lambda config, embed_dim, settings: MeanPatchTower(config, embed_dim,
                                                             dtype=settings.dtype),
    check=check, blocks=lambda config: 1, flops=flops, patches=num_patches))
