"""The architecture records and the one table of named CLIP models.

A model is data: a frozen `CLIPConfig` holding one image-tower record and one text-tower record.
Every named architecture lives in `MODELS`, with OpenAI's and open_clip's sizes, so that their
weights load with a name mapping alone; `get_model_config` applies overrides to a named entry and
checks them before anything is built.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from clip_jax.models import attention
from clip_jax.models import layers

DTYPES = ("float32", "bfloat16")
# OpenAI's per-channel RGB statistics, the default: their weights only work with exactly these.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# "shortest": shorter side to the image size, then the centre crop (OpenAI's); "squash": both
# sides to the image size, the aspect ratio not kept (many open_clip and SigLIP checkpoints').
RESIZE_MODES = ("shortest", "squash")
INTERPOLATIONS = ("bicubic", "bilinear")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preprocessing:
  """How a checkpoint's images were prepared when it was trained: its features assume the same.

  The statistics standardise uint8 pixels inside the model (`CLIP.encode_image`); the resize
  mode and filter make the evaluation view on the host (`input_pipeline.preprocessing`).
  """
  mean: tuple[float, float, float] = OPENAI_MEAN
  std: tuple[float, float, float] = OPENAI_STD
  resize_mode: str = "shortest"
  interpolation: str = "bicubic"


@dataclasses.dataclass(frozen=True, kw_only=True)
class VisionTransformerConfig:
  image_size: int
  patch_size: int
  width: int
  layers: int
  head_width: int = 64
  mlp_dim: int | None = None  # None: 4 * width.


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModifiedResNetConfig:
  image_size: int
  layers: tuple[int, ...]  # Bottleneck blocks per stage; each stage after the first halves H, W.
  width: int  # Stem width; stage i has width * 2**i planes and outputs 4 times as many channels.
  head_width: int = 64  # Of the attention pool.


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextConfig:
  context_length: int = 77
  vocab_size: int = 49408
  width: int
  layers: int
  head_width: int = 64
  mlp_dim: int | None = None  # None: 4 * width.


@dataclasses.dataclass(frozen=True, kw_only=True)
class CLIPConfig:
  embed_dim: int
  vision: VisionTransformerConfig | ModifiedResNetConfig
  text: TextConfig
  activation: str = "gelu"  # "quick_gelu" for OpenAI's weights, "gelu" (exact) for open_clip's.
  dtype: str = "float32"  # Compute dtype; parameters are always float32.
  remat: bool = False  # Recompute each transformer block in the backward pass.
  scan: bool = False  # Scan over transformer blocks (parameters stacked on a leading layer axis).
  attention: str = "auto"  # The kernel: "auto", "xla", "cudnn", "splash" (models/attention.py).
  init_logit_scale: float = math.log(1 / 0.07)  # The sigmoid loss wants log(10).
  init_logit_bias: float | None = None  # A learned logit bias (sigmoid loss: -10), if not None.
  preprocessing: Preprocessing = Preprocessing()


def _openai(embed_dim, vision, text_width):
  """OpenAI's models share a 12-layer text tower and QuickGELU."""
  return CLIPConfig(embed_dim=embed_dim, vision=vision, activation="quick_gelu",
                    text=TextConfig(width=text_width, layers=12))


def _resnet(image_size, layers, width):
  return ModifiedResNetConfig(image_size=image_size, layers=layers, width=width)


def _vit(image_size, patch_size, width, layers, **sizes):
  return VisionTransformerConfig(image_size=image_size, patch_size=patch_size, width=width,
                                 layers=layers, **sizes)


MODELS: dict[str, CLIPConfig] = {
    # OpenAI's released models (QuickGELU).
    "RN50": _openai(1024, _resnet(224, (3, 4, 6, 3), 64), 512),
    "RN101": _openai(512, _resnet(224, (3, 4, 23, 3), 64), 512),
    "RN50x4": _openai(640, _resnet(288, (4, 6, 10, 6), 80), 640),
    "RN50x16": _openai(768, _resnet(384, (6, 8, 18, 8), 96), 768),
    "RN50x64": _openai(1024, _resnet(448, (3, 15, 36, 10), 128), 1024),
    "ViT-B-32": _openai(512, _vit(224, 32, 768, 12), 512),
    "ViT-B-16": _openai(512, _vit(224, 16, 768, 12), 512),
    "ViT-L-14": _openai(768, _vit(224, 14, 1024, 24), 768),
    "ViT-L-14-336": _openai(768, _vit(336, 14, 1024, 24), 768),
    # open_clip's LAION models (exact GELU).
    "ViT-H-14": CLIPConfig(
        embed_dim=1024, vision=_vit(224, 14, 1280, 32, head_width=80, mlp_dim=5120),
        text=TextConfig(width=1024, layers=24)),
    "ViT-g-14": CLIPConfig(
        embed_dim=1024, vision=_vit(224, 14, 1408, 40, head_width=88, mlp_dim=6144),
        text=TextConfig(width=1024, layers=24)),
    "ViT-bigG-14": CLIPConfig(
        embed_dim=1280, vision=_vit(224, 14, 1664, 48, head_width=104, mlp_dim=8192),
        text=TextConfig(width=1280, layers=32)),
    # Tiny models for tests and demos.
    "tiny-vit": CLIPConfig(
        embed_dim=32, vision=_vit(32, 8, 64, 2),
        text=TextConfig(context_length=16, vocab_size=1000, width=64, layers=2)),
    "tiny-rn": CLIPConfig(
        embed_dim=32, vision=_resnet(32, (1, 1), 16),
        text=TextConfig(context_length=16, vocab_size=1000, width=64, layers=2)),
}


def list_models() -> list[str]:
  return list(MODELS)


def _allowed(values) -> str:
  return ", ".join(str(value) for value in values)


def _replace(record, changes: Mapping[str, Any], prefix: str):
  """`dataclasses.replace` that names an unknown key, with its allowed alternatives."""
  fields = [field.name for field in dataclasses.fields(record)]
  for key in changes.keys():
    if key not in fields:
      raise ValueError(f"Unknown model setting {prefix}{key}={changes[key]!r} for "
                       f"{type(record).__name__}; allowed: {_allowed(fields)}.")
  # ml_collections turns tuples into lists; the records stay hashable.
  changes = {key: tuple(value) if isinstance(value, list) else value
             for key, value in changes.items()}
  return dataclasses.replace(record, **changes)


def check(config: CLIPConfig, prefix: str = "") -> None:
  """Rejects values that would only fail (or silently misbehave) deep inside the model."""
  if config.dtype not in DTYPES:
    raise ValueError(f"{prefix}dtype={config.dtype!r}; allowed: {_allowed(DTYPES)}.")
  if config.attention not in attention.IMPLEMENTATIONS:
    raise ValueError(f"{prefix}attention={config.attention!r}; allowed: "
                     f"{_allowed(attention.IMPLEMENTATIONS)}.")
  if config.attention == "cudnn" and config.dtype != "bfloat16":
    raise ValueError(f"{prefix}attention='cudnn' with {prefix}dtype={config.dtype!r}: cuDNN's "
                     f"fused attention takes half precision only; allowed: attention=auto, xla "
                     f"or splash, or dtype='bfloat16'.")
  if config.activation not in layers.ACTIVATIONS:
    raise ValueError(f"{prefix}activation={config.activation!r}; allowed: "
                     f"{_allowed(layers.ACTIVATIONS)}.")
  preprocessing = config.preprocessing
  for key, allowed in (("resize_mode", RESIZE_MODES), ("interpolation", INTERPOLATIONS)):
    if getattr(preprocessing, key) not in allowed:
      raise ValueError(f"{prefix}preprocessing.{key}={getattr(preprocessing, key)!r}; allowed: "
                       f"{_allowed(allowed)}.")
  for key in ("mean", "std"):
    values = getattr(preprocessing, key)
    if len(values) != 3 or (key == "std" and min(values) <= 0):
      raise ValueError(f"{prefix}preprocessing.{key}={values!r}; allowed: three (R, G, B) "
                       f"{'positive ' if key == 'std' else ''}numbers.")
  vision, text = config.vision, config.text
  if isinstance(vision, VisionTransformerConfig):
    if vision.image_size % vision.patch_size:
      raise ValueError(f"{prefix}vision.patch_size={vision.patch_size} does not divide "
                       f"vision.image_size={vision.image_size}; allowed: its divisors.")
    vision_width = vision.width
  else:
    stride = 2 ** (len(vision.layers) + 1)
    if vision.image_size % stride:
      raise ValueError(f"{prefix}vision.image_size={vision.image_size}; allowed: multiples of "
                       f"{stride} (the ResNet's total stride).")
    vision_width = vision.width * 2 ** (len(vision.layers) + 1)  # Into the attention pool.
  for tower, width, head_width in [("vision", vision_width, vision.head_width),
                                   ("text", text.width, text.head_width)]:
    if width % head_width:
      raise ValueError(f"{prefix}{tower}.head_width={head_width} does not divide the width "
                       f"{width}; allowed: its divisors.")


# The fields of CLIPConfig that are records, changed field by field.
RECORDS = ("vision", "text", "preprocessing")


def get_model_config(name: str, **overrides) -> CLIPConfig:
  """The named architecture with `overrides` applied and checked.

  Overrides are `CLIPConfig` fields; `vision=dict(...)`, `text=dict(...)` and
  `preprocessing=dict(...)` change fields of those records. A bad name, key or value raises a
  ValueError naming it and what is allowed.
  """
  if name not in MODELS:
    raise ValueError(f"model.name={name!r} is not a known model; allowed: "
                     f"{_allowed(MODELS)}.")
  prefix = "model.overrides."
  config = MODELS[name]
  towers = {key: overrides.pop(key) for key in RECORDS if key in overrides}
  config = _replace(config, overrides, prefix)
  config = _replace(config, {key: _replace(getattr(config, key), changes, f"{prefix}{key}.")
                             for key, changes in towers.items()}, prefix)
  check(config, prefix)
  return config


def config_to_dict(config: CLIPConfig) -> dict[str, Any]:
  """A JSON-ready dict of the architecture, as saved beside converted weights."""
  return dataclasses.asdict(config)


def function_fields(config: CLIPConfig) -> dict[str, Any]:
  """What of a config decides the function its weights compute: not the compute dtype, remat,
  scan, the attention kernel, nor the initial temperature and bias (which the weights replace)."""
  fields = config_to_dict(config)
  for key in ("dtype", "remat", "scan", "attention", "init_logit_scale", "init_logit_bias"):
    fields.pop(key)
  return fields


def config_from_dict(fields: Mapping[str, Any]) -> CLIPConfig:
  """The inverse of `config_to_dict` (a ViT when the vision record has a patch size), checked."""
  fields = dict(fields)
  vision = dict(fields.pop("vision"))
  vision_type = VisionTransformerConfig if "patch_size" in vision else ModifiedResNetConfig
  if vision_type is ModifiedResNetConfig:
    vision["layers"] = tuple(vision["layers"])
  # Files written before checkpoints recorded their preprocessing have OpenAI's.
  preprocessing = {key: tuple(value) if isinstance(value, list) else value
                   for key, value in fields.pop("preprocessing", {}).items()}
  config = CLIPConfig(vision=vision_type(**vision), text=TextConfig(**fields.pop("text")),
                      preprocessing=Preprocessing(**preprocessing), **fields)
  check(config)
  return config
