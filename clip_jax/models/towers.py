"""Image towers as plug-ins: each kind registers, where it is implemented, what the rest of
clip_jax needs to know of it, so that nothing outside asks which kind a tower is.

A kind is its config record (a frozen dataclass with at least `image_size`) and an `ImageTower`:
how to build its Flax module, check its settings, count its blocks and FLOPs, and whether it has
patches that FLIP may drop. clip_jax's own kinds are `vision.VisionTransformerConfig` ("vit") and
`resnet.ModifiedResNetConfig` ("modified_resnet"); docs/extending.md shows how to add one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn

from clip_jax import registry
from clip_jax.models import costs


@dataclasses.dataclass(frozen=True, kw_only=True)
class TowerSettings:
  """The model-wide settings a tower may take (CLIPConfig's): activation, compute dtype, remat,
  scanned blocks, the attention kernel, the LayerNorms' epsilon."""
  activation: str
  dtype: Any
  scan: bool
  remat: bool
  attention: str
  norm_epsilon: float = 1e-5


# How learned positions are interpolated to another grid (clip_jax.models.positions): as
# open_clip's resize_pos_embed, or as transformers' interpolate_pos_encoding.
POSITION_INTERPOLATIONS = ("open_clip", "hf")


@dataclasses.dataclass(frozen=True)
class Grid:
  """Where an image tower keeps its learned positions (clip_jax.models.positions resizes them):
  the parameter's path under the tower, the tokens before the grid (a class token), and the
  grid's edge in patches."""
  path: tuple[str, ...]
  prefix_tokens: int
  edge: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageTower:
  """What clip_jax needs to know of an image tower kind.

  The module `build(config, embed_dim, settings)` returns maps images [B, H, W, 3] (standardised
  floats) to unnormalised features [B, embed_dim], called as `module(images, train=...)`; a kind
  with `patches` also takes `patch_indices` [B, keep], the patches each image keeps (FLIP).
  """
  kind: str                                            # its name in model.json
  config: type                                         # its frozen config record
  build: Callable[[Any, int, TowerSettings], nn.Module]
  check: Callable[[Any, str], None]                    # (config, key prefix): ValueError if bad
  blocks: Callable[[Any], int]                         # residual blocks, for locking the last few
  flops: Callable[[Any, int, float, bool], costs.Cost]  # (config, embed_dim, mask ratio, remat)
  patches: Callable[[Any], int] | None = None          # patches per image; None: none to drop
  scanned_layers: str | None = None                    # the config field counting scanned blocks
  # The width of the features a tower without a projection emits (SigLIP's: its own width, which
  # embed_dim must then equal); None: the tower projects to any embed_dim.
  features: Callable[[Any], int] | None = None
  # Its learned positions, for another image size (None: it has none to resize), and the
  # family's own way to interpolate them (POSITION_INTERPOLATIONS).
  positions: Callable[[Any], Grid] | None = None
  position_interpolation: str = "open_clip"


_TOWERS: registry.Registry[ImageTower] = registry.Registry("image tower", name_field="kind")


def register(tower: ImageTower) -> ImageTower:
  """Adds a kind; a config record registered twice is an error too."""
  if any(known.config is tower.config for known in _TOWERS.entries()):
    raise ValueError(f"An image tower of record {tower.config.__name__} is registered already.")
  return _TOWERS.register(tower)


def kinds() -> list[str]:
  return _TOWERS.names()


def of_kind(kind: str, key: str = "vision.kind") -> ImageTower:
  """The registration of a kind; `key` names the setting in an error."""
  return _TOWERS.get(kind, key)


def of(config: Any) -> ImageTower:
  """The registration of an image tower's config record."""
  for tower in _TOWERS.entries():
    if isinstance(config, tower.config):
      return tower
  raise ValueError(f"{type(config).__name__} is not the record of a registered image tower; "
                   f"allowed: {', '.join(tower.config.__name__ for tower in _TOWERS.entries())}.")


def describe(config: Any) -> str:
  """A tower's name in messages: its record's, without "Config" ("ModifiedResNet")."""
  return type(config).__name__.removesuffix("Config")
