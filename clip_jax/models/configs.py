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

from clip_jax import image_preparation
from clip_jax.models import attention
from clip_jax.models import layers
from clip_jax.models import resnet
from clip_jax.models import siglip_vision
from clip_jax.models import towers
from clip_jax.models import vision as vision_lib

DTYPES = ("float32", "bfloat16")

TEXT_POOLS = ("end_of_text", "last")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextConfig:
  """The text tower (models/text.py). CLIP's: causal, read out at the end-of-text token (the
  largest id), projected without a bias. SigLIP's: bidirectional, read out at the last position
  (its captions are padded to the context length), projected with a bias."""
  context_length: int = 77
  vocab_size: int = 49408
  width: int
  layers: int
  head_width: int = 64
  mlp_dim: int | None = None  # None: 4 * width.
  causal: bool = True
  pool: str = "end_of_text"  # TEXT_POOLS
  projection_bias: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class CLIPConfig:
  embed_dim: int
  vision: Any  # the config record of a registered image tower (clip_jax.models.towers)
  text: TextConfig
  activation: str = "gelu"  # "quick_gelu" for OpenAI's weights, "gelu" (exact) for open_clip's.
  dtype: str = "float32"  # Compute dtype; parameters are always float32.
  remat: bool = False  # Recompute each transformer block in the backward pass.
  scan: bool = False  # Scan over transformer blocks (parameters stacked on a leading layer axis).
  attention: str = "auto"  # The kernel: "auto", "xla", "cudnn", "splash" (models/attention.py).
  init_logit_scale: float = math.log(1 / 0.07)  # The sigmoid loss wants log(10).
  init_logit_bias: float | None = None  # A learned logit bias (sigmoid loss: -10), if not None.
  norm_epsilon: float = 1e-5  # Every LayerNorm's: PyTorch's default, OpenAI's; SigLIP's 1e-6.
  preprocessing: image_preparation.Preprocessing = image_preparation.Preprocessing()


def _openai(embed_dim, vision, text_width):
  """OpenAI's models share a 12-layer text tower and QuickGELU."""
  return CLIPConfig(embed_dim=embed_dim, vision=vision, activation="quick_gelu",
                    text=TextConfig(width=text_width, layers=12))


def _resnet(image_size, layers, width):
  return resnet.ModifiedResNetConfig(image_size=image_size, layers=layers, width=width)


def _vit(image_size, patch_size, width, layers, **sizes):
  return vision_lib.VisionTransformerConfig(image_size=image_size, patch_size=patch_size,
                                            width=width, layers=layers, **sizes)


# SigLIP's image statistics (Inception's: pixels to [-1, 1]), both sides resized to the image size.
SIGLIP_PREPROCESSING = image_preparation.Preprocessing(
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_mode="squash")
# The towers' sizes: (width, layers, head width, MLP width).
_SIGLIP_SIZES = {"B": (768, 12, 64, 3072), "L": (1024, 24, 64, 4096),
                 "So400m": (1152, 27, 72, 4304), "g-opt": (1536, 40, 96, 6144)}


def _siglip(size: str, patch_size: int, image_size: int, vocab_size: int,
            text_size: str | None = None, context_length: int = 64) -> CLIPConfig:
  """big_vision's SigLIP (Zhai et al. 2023) and SigLIP 2 (Tschannen et al. 2025): a MAP-pooled
  ViT, a bidirectional text tower of 64 tokens read at the last one, tanh GELU, LayerNorm
  epsilon 1e-6, the sigmoid loss's temperature log(10) and bias -10. SigLIP 2's fixed-resolution
  models are SigLIP's architecture with Gemma's 256k vocabulary; g-opt pairs its image tower with
  the So400m text tower. (SigLIP's So400m/14 at 224 reads 16 tokens.)"""
  width, layers_, head_width, mlp_dim = _SIGLIP_SIZES[size]
  text_width, text_layers, text_head_width, text_mlp = _SIGLIP_SIZES[text_size or size]
  return CLIPConfig(
      embed_dim=width, activation="gelu_tanh", norm_epsilon=1e-6,
      vision=siglip_vision.SigLIPVisionConfig(
          image_size=image_size, patch_size=patch_size, width=width, layers=layers_,
          head_width=head_width, mlp_dim=mlp_dim),
      text=TextConfig(context_length=context_length, vocab_size=vocab_size, width=text_width,
                      layers=text_layers, head_width=text_head_width, mlp_dim=text_mlp,
                      causal=False, pool="last", projection_bias=True),
      init_logit_scale=math.log(10), init_logit_bias=-10.0, preprocessing=SIGLIP_PREPROCESSING)


SIGLIP_VOCABULARY = 32_000  # SigLIP's English SentencePiece model
GEMMA_VOCABULARY = 256_000  # SigLIP 2's: Gemma's tokenizer


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
    # SigLIP (open_clip's names; Hugging Face's google/siglip-*).
    **{f"ViT-B-16-SigLIP{suffix}": _siglip("B", 16, size, SIGLIP_VOCABULARY)
       for size, suffix in ((224, ""), (256, "-256"), (384, "-384"), (512, "-512"))},
    **{f"ViT-L-16-SigLIP-{size}": _siglip("L", 16, size, SIGLIP_VOCABULARY) for size in (256, 384)},
    "ViT-SO400M-14-SigLIP": _siglip("So400m", 14, 224, SIGLIP_VOCABULARY, context_length=16),
    "ViT-SO400M-14-SigLIP-384": _siglip("So400m", 14, 384, SIGLIP_VOCABULARY),
    # SigLIP 2 at fixed resolutions (Hugging Face's google/siglip2-*).
    **{f"ViT-B-16-SigLIP2{suffix}": _siglip("B", 16, size, GEMMA_VOCABULARY)
       for size, suffix in ((224, ""), (256, "-256"), (384, "-384"), (512, "-512"))},
    "ViT-B-32-SigLIP2-256": _siglip("B", 32, 256, GEMMA_VOCABULARY),
    **{f"ViT-L-16-SigLIP2-{size}": _siglip("L", 16, size, GEMMA_VOCABULARY)
       for size in (256, 384, 512)},
    "ViT-SO400M-14-SigLIP2": _siglip("So400m", 14, 224, GEMMA_VOCABULARY),
    "ViT-SO400M-14-SigLIP2-378": _siglip("So400m", 14, 378, GEMMA_VOCABULARY),
    **{f"ViT-SO400M-16-SigLIP2-{size}": _siglip("So400m", 16, size, GEMMA_VOCABULARY)
       for size in (256, 384, 512)},
    **{f"ViT-gopt-16-SigLIP2-{size}": _siglip("g-opt", 16, size, GEMMA_VOCABULARY, "So400m")
       for size in (256, 384)},
    # Tiny models for tests and demos.
    "tiny-vit": CLIPConfig(
        embed_dim=32, vision=_vit(32, 8, 64, 2),
        text=TextConfig(context_length=16, vocab_size=1000, width=64, layers=2)),
    "tiny-siglip": dataclasses.replace(
        _siglip("B", 8, 32, 1000), embed_dim=64,
        vision=siglip_vision.SigLIPVisionConfig(image_size=32, patch_size=8, width=64, layers=2),
        text=TextConfig(context_length=16, vocab_size=1000, width=64, layers=2, causal=False,
                        pool="last", projection_bias=True)),
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
  for key, allowed in (("resize_mode", image_preparation.RESIZE_MODES),
                       ("interpolation", image_preparation.INTERPOLATIONS)):
    if getattr(preprocessing, key) not in allowed:
      raise ValueError(f"{prefix}preprocessing.{key}={getattr(preprocessing, key)!r}; allowed: "
                       f"{_allowed(allowed)}.")
  for key in ("mean", "std"):
    values = getattr(preprocessing, key)
    if len(values) != 3 or (key == "std" and min(values) <= 0):
      raise ValueError(f"{prefix}preprocessing.{key}={values!r}; allowed: three (R, G, B) "
                       f"{'positive ' if key == 'std' else ''}numbers.")
  if not 0 < config.norm_epsilon < 1:
    raise ValueError(f"{prefix}norm_epsilon={config.norm_epsilon!r}; allowed: 0 < epsilon < 1.")
  tower = towers.of(config.vision)
  tower.check(config.vision, prefix)
  if tower.features is not None and tower.features(config.vision) != config.embed_dim:
    raise ValueError(f"{prefix}embed_dim={config.embed_dim}, but a {towers.describe(config.vision)}"
                     f" image tower has no projection: its features are its width, "
                     f"{tower.features(config.vision)}; allowed: {tower.features(config.vision)}.")
  text = config.text
  if text.width % text.head_width:
    raise ValueError(f"{prefix}text.head_width={text.head_width} does not divide the width "
                     f"{text.width}; allowed: its divisors.")
  if text.pool not in TEXT_POOLS:
    raise ValueError(f"{prefix}text.pool={text.pool!r}; allowed: {_allowed(TEXT_POOLS)}.")


# The fields of CLIPConfig that are records, changed field by field.
RECORDS = ("vision", "text", "preprocessing")


def get_model_config(name: str, **overrides) -> CLIPConfig:
  """The named architecture with `overrides` applied and checked.

  Overrides are `CLIPConfig` fields; `vision=dict(...)`, `text=dict(...)` and
  `preprocessing=dict(...)` change fields of those records, and `vision=dict(kind=...)` of
  another registered kind replaces the image tower with one of that kind. A bad name, key or
  value raises a ValueError naming it and what is allowed.
  """
  if name not in MODELS:
    raise ValueError(f"model.name={name!r} is not a known model; allowed: "
                     f"{_allowed(MODELS)}.")
  prefix = "model.overrides."
  config = MODELS[name]
  records = {key: dict(overrides.pop(key)) for key in RECORDS if key in overrides}
  kind = records.get("vision", {}).pop("kind", None)
  if kind is not None and (
      tower := towers.of_kind(kind, f"{prefix}vision.kind")) is not towers.of(config.vision):
    # Another kind of image tower: a record of its own, every field given or defaulted.
    config = dataclasses.replace(config, vision=_new_record(tower.config, records.pop("vision"),
                                                            f"{prefix}vision."))
  config = _replace(config, overrides, prefix)
  config = _replace(config, {key: _replace(getattr(config, key), changes, f"{prefix}{key}.")
                             for key, changes in records.items()}, prefix)
  check(config, prefix)
  return config


def _new_record(record_type: type, fields: Mapping[str, Any], prefix: str):
  """A record of `record_type` from `fields`, naming an unknown field or a missing one."""
  known = {field.name: field for field in dataclasses.fields(record_type)}
  for key in fields:
    if key not in known:
      raise ValueError(f"Unknown model setting {prefix}{key}={fields[key]!r} for "
                       f"{record_type.__name__}; allowed: {_allowed(known)}.")
  missing = [name for name, field in known.items() if name not in fields
             and field.default is dataclasses.MISSING
             and field.default_factory is dataclasses.MISSING]
  if missing:
    raise ValueError(f"{prefix}{missing[0]} is needed for a {record_type.__name__} (its kind has "
                     f"no value of the named model to keep); give {', '.join(missing)}.")
  return record_type(**{key: tuple(value) if isinstance(value, list) else value
                        for key, value in fields.items()})


def config_to_dict(config: CLIPConfig) -> dict[str, Any]:
  """A JSON-ready dict of the architecture, as saved beside converted weights; the image tower's
  record carries its kind."""
  fields = dataclasses.asdict(config)
  fields["vision"] = {"kind": towers.of(config.vision).kind, **fields["vision"]}
  return fields


def function_fields(config: CLIPConfig) -> dict[str, Any]:
  """What of a config decides the function its weights compute: not the compute dtype, remat,
  scan, the attention kernel, nor the initial temperature and bias (which the weights replace)."""
  fields = config_to_dict(config)
  for key in ("dtype", "remat", "scan", "attention", "init_logit_scale", "init_logit_bias"):
    fields.pop(key)
  return fields


def config_from_dict(fields: Mapping[str, Any]) -> CLIPConfig:
  """The inverse of `config_to_dict`, checked."""
  fields = dict(fields)
  vision = dict(fields.pop("vision"))
  # Files written before the record carried its kind hold a ViT or a ModifiedResNet.
  kind = vision.pop("kind", "vit" if "patch_size" in vision else "modified_resnet")
  vision = {key: tuple(value) if isinstance(value, list) else value
            for key, value in vision.items()}
  # Files written before checkpoints recorded their preprocessing have OpenAI's.
  preprocessing = {key: tuple(value) if isinstance(value, list) else value
                   for key, value in fields.pop("preprocessing", {}).items()}
  config = CLIPConfig(vision=towers.of_kind(kind).config(**vision),
                      text=TextConfig(**fields.pop("text")),
                      preprocessing=image_preparation.Preprocessing(**preprocessing), **fields)
  check(config)
  return config
