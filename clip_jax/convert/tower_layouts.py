"""How others' weight files hold an image tower of each kind: a conversion layout registered per
kind (docs/extending.md), so that nothing in clip_jax.convert switches on a tower's record.

OpenAI's state dict (open_clip's CLIP shares it) is told apart by the names it holds, and a
tower's config is read from its tensor shapes; the family says how transformers and open_clip
hold a model with it: a CLIPModel and OpenAI's layout, or a SiglipModel and timm's (open_clip's
CustomTextCLIP). A plug-in tower registers its layout here to be converted; one without is
trained, saved and loaded, but not converted.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Mapping

import numpy as np

from clip_jax import registry
from clip_jax.models import configs
from clip_jax.models import resnet
from clip_jax.models import siglip_vision
from clip_jax.models import towers
from clip_jax.models import vision as vision_lib

FAMILIES = ("clip", "siglip")  # transformers' CLIPModel / SiglipModel and their open_clip forms


@dataclasses.dataclass(frozen=True, kw_only=True)
class TowerLayout:
  kind: str  # the tower's kind (towers.ImageTower.kind)
  family: str  # one of FAMILIES
  in_openai: Callable[[Mapping[str, Any]], bool]  # whether an OpenAI state dict holds the tower
  # Its config from the state dict's shapes, and what the tower implies for the rest of the model
  # (CLIPConfig fields: a SigLIP tower comes with SigLIP's text tower, activation, ...).
  from_openai: Callable[[Mapping[str, Any]], tuple[Any, dict[str, Any]]]
  # open_clip's vision_cfg for a tower of the "clip" family (None: open_clip has no such tower).
  open_clip_vision_cfg: Callable[[Any], dict[str, Any]] | None = None
  hf: bool = False  # whether transformers holds the tower (its family's model)


LAYOUTS: registry.Registry[TowerLayout] = registry.Registry("weight layout", name_field="kind")


def register(layout: TowerLayout) -> TowerLayout:
  if layout.family not in FAMILIES:
    raise ValueError(f"family={layout.family!r}; allowed: {', '.join(FAMILIES)}.")
  return LAYOUTS.register(layout)


def of(config: configs.CLIPConfig) -> TowerLayout:
  """The layout of a model's image tower; a ValueError for a tower without one."""
  kind = towers.of(config.vision).kind
  if kind not in LAYOUTS:
    raise ValueError(f"A {towers.describe(config.vision)} image tower has no weight layout to "
                     f"convert; allowed: towers of kind {LAYOUTS.allowed()} (docs/extending.md).")
  return LAYOUTS.get(kind, "vision.kind")


def in_hf(family: str) -> Any:
  """The config record of the image tower that transformers' model of `family` holds."""
  kind = next(layout.kind for layout in LAYOUTS.entries() if layout.family == family and layout.hf)
  return towers.of_kind(kind).config


def in_openai_state_dict(state_dict: Mapping[str, Any]) -> TowerLayout:
  """The layout whose tower an OpenAI-layout state dict holds."""
  for layout in LAYOUTS.entries():
    if layout.in_openai(state_dict):
      return layout
  raise ValueError("The state dict holds no image tower clip_jax reads (visual.proj, "
                   "visual.attnpool or visual.head.probe); allowed: OpenAI's or open_clip's CLIP.")


def count_blocks(state_dict: Mapping[str, Any], prefix: str) -> int:
  """How many numbered blocks `prefix<N>.` the state dict holds."""
  pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
  return len({match[1] for name in state_dict if (match := pattern.match(name))})


def mlp_dim(state_dict: Mapping[str, Any], prefix: str, width: int) -> int | None:
  """A transformer's MLP width where it is not 4x its width (None)."""
  dim = np.shape(state_dict[f"{prefix}resblocks.0.mlp.c_fc.weight"])[0]
  return None if dim == 4 * width else dim


def _shape(state_dict: Mapping[str, Any], name: str) -> tuple[int, ...]:
  return np.shape(state_dict[name])


def _vit_from_openai(state_dict):
  width, _, patch, _ = _shape(state_dict, "visual.conv1.weight")
  grid = round((_shape(state_dict, "visual.positional_embedding")[0] - 1) ** 0.5)
  return vision_lib.VisionTransformerConfig(
      image_size=patch * grid, patch_size=patch, width=width,
      layers=count_blocks(state_dict, "visual.transformer.resblocks."),
      mlp_dim=mlp_dim(state_dict, "visual.transformer.", width)), {}


def _resnet_from_openai(state_dict):
  stages = tuple(count_blocks(state_dict, f"visual.layer{stage}.") for stage in range(1, 5))
  stages = stages[:stages.index(0)] if 0 in stages else stages
  grid = round((_shape(state_dict, "visual.attnpool.positional_embedding")[0] - 1) ** 0.5)
  return resnet.ModifiedResNetConfig(
      image_size=grid * 2 ** (len(stages) + 1), layers=stages,
      width=_shape(state_dict, "visual.layer1.0.conv1.weight")[0]), {}


def _siglip_from_openai(state_dict):
  """Grid positions only and attention pooling; with SigLIP's text tower (bidirectional, read at
  its last token, a biased projection), tanh GELU, LayerNorm epsilon and temperature."""
  width, _, patch, _ = _shape(state_dict, "visual.conv1.weight")
  vision = siglip_vision.SigLIPVisionConfig(
      image_size=patch * round(_shape(state_dict, "visual.positional_embedding")[0] ** 0.5),
      patch_size=patch, width=width,
      layers=count_blocks(state_dict, "visual.transformer.resblocks."),
      mlp_dim=mlp_dim(state_dict, "visual.transformer.", width))
  return vision, dict(text=dict(causal=False, pool="last", projection_bias=True),
                      activation="gelu_tanh", norm_epsilon=1e-6, init_logit_scale=math.log(10),
                      preprocessing=configs.SIGLIP_PREPROCESSING)


register(TowerLayout(
    kind="vit", family="clip", hf=True, in_openai=lambda state_dict: "visual.proj" in state_dict,
    from_openai=_vit_from_openai,
    open_clip_vision_cfg=lambda vision: dict(
        image_size=vision.image_size, patch_size=vision.patch_size, width=vision.width,
        layers=vision.layers, head_width=vision.head_width,
        mlp_ratio=(vision.mlp_dim or 4 * vision.width) / vision.width)))
register(TowerLayout(
    kind="modified_resnet", family="clip",
    in_openai=lambda state_dict: "visual.attnpool.positional_embedding" in state_dict,
    from_openai=_resnet_from_openai,
    open_clip_vision_cfg=lambda vision: dict(
        image_size=vision.image_size, layers=list(vision.layers), width=vision.width,
        head_width=vision.head_width)))
register(TowerLayout(
    kind="siglip_vit", family="siglip", hf=True,
    in_openai=lambda state_dict: "visual.head.probe" in state_dict,
    from_openai=_siglip_from_openai))
