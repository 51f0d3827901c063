"""Hugging Face `CLIPModel` and `SiglipModel` <-> clip_jax's interchange layout (OpenAI's state
dict names, extended for SigLIP's tower by `openai_layout`'s rules): parameter names, fused
attention, the config.

transformers' CLIP is OpenAI's ViT CLIP under other names, with q/k/v as three Linear layers
instead of one fused `in_proj`, and the two projections stored as Linear weights (transposed).
It has no ModifiedResNet. Its SigLIP names the text projection `text_model.head` (with a bias),
keeps the scalars `logit_scale` and `logit_bias` as [1] tensors, and fuses the attention-pooling
head's query, key and value projections into one `in_proj` (clip_jax keeps the probe's query
apart from the patches' keys and values). Reading needs neither torch nor transformers:
config.json is read with transformers' defaults for the keys it leaves out.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from clip_jax.convert import tower_layouts
from clip_jax.models import configs
from clip_jax.models import towers

# (interchange prefix, HF prefix), whole names where they end in "$": what both families share.
_SHARED_PREFIXES = [
    ("token_embedding.", "text_model.embeddings.token_embedding."),
    ("positional_embedding$", "text_model.embeddings.position_embedding.weight$"),
    ("transformer.resblocks.", "text_model.encoder.layers."),
    ("ln_final.", "text_model.final_layer_norm."),
    ("visual.conv1.", "vision_model.embeddings.patch_embedding."),
    ("visual.positional_embedding$", "vision_model.embeddings.position_embedding.weight$"),
    ("visual.transformer.resblocks.", "vision_model.encoder.layers."),
    ("visual.ln_post.", "vision_model.post_layernorm."),
    ("logit_scale$", "logit_scale$"),
]
_IN_BLOCKS = [(".ln_1.", ".layer_norm1."), (".ln_2.", ".layer_norm2."),
              (".mlp.c_fc.", ".mlp.fc1."), (".mlp.c_proj.", ".mlp.fc2."),
              (".attn.out_proj.", ".self_attn.out_proj.")]
_QKV = ("q", "k", "v")
SIGLIP_TOKENIZER_FILE = "spiece.model"  # SiglipTokenizer's SentencePiece model, in the directory
_SIGLIP_HEAD = "vision_model.head.attention.in_proj_"  # the MAP head's fused q/k/v
_SIGLIP_SCALARS = ("logit_scale", "logit_bias")  # [] in clip_jax, [1] in SiglipModel


@dataclasses.dataclass(frozen=True)
class _Family:
  """One transformers model class: its names, its transposed projections ([W, E] in the
  interchange layout, [E, W] in HF's) and its config defaults."""
  architecture: str
  prefixes: list[tuple[str, str]]
  projections: tuple[str, ...]
  text_defaults: dict[str, Any]
  vision_defaults: dict[str, Any]


CLIP = _Family(
    architecture="CLIPModel",
    prefixes=_SHARED_PREFIXES + [
        ("visual.class_embedding$", "vision_model.embeddings.class_embedding$"),
        ("visual.ln_pre.", "vision_model.pre_layrnorm."),  # sic: transformers' name
        ("visual.proj$", "visual_projection.weight$"),
        ("text_projection$", "text_projection.weight$")],
    projections=("visual.proj", "text_projection"),
    # transformers' CLIPTextConfig / CLIPVisionConfig defaults, for files that omit keys.
    text_defaults=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048,
                       num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77,
                       hidden_act="quick_gelu", layer_norm_eps=1e-5),
    vision_defaults=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, image_size=224, patch_size=32,
                         hidden_act="quick_gelu", layer_norm_eps=1e-5))
SIGLIP = _Family(
    architecture="SiglipModel",
    prefixes=_SHARED_PREFIXES + [
        ("text_projection$", "text_model.head.weight$"),
        ("text_projection_bias$", "text_model.head.bias$"),
        ("logit_bias$", "logit_bias$"),
        ("visual.head.probe$", "vision_model.head.probe$"),
        ("visual.head.out_proj.", "vision_model.head.attention.out_proj."),
        ("visual.head.ln.", "vision_model.head.layernorm."),
        ("visual.head.mlp.c_fc.", "vision_model.head.mlp.fc1."),
        ("visual.head.mlp.c_proj.", "vision_model.head.mlp.fc2.")],
    projections=("text_projection",),
    # transformers' SiglipTextConfig / SiglipVisionConfig defaults (SigLIP B/16 at 224).
    text_defaults=dict(vocab_size=32000, hidden_size=768, intermediate_size=3072,
                       num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=64,
                       hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
    vision_defaults=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, image_size=224, patch_size=16,
                         hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6))
# HF's activation names -> clip_jax's.
_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh"}


def rename(name: str, pairs: list[tuple[str, str]], blocks: list[tuple[str, str]]) -> str:
  """`name` in the other layout: the first of `pairs` (prefixes, or whole names ending in "$")
  that matches, then, inside a numbered block, every `blocks` piece replaced. Shared by the
  Hugging Face and timm layouts."""
  for source, target in pairs:
    whole = source.endswith("$")
    if (name == source[:-1]) if whole else name.startswith(source):
      renamed = target.rstrip("$") + name[len(source.rstrip("$")):]
      if any(marker in renamed for marker in (".layers.", ".resblocks.", ".blocks.")):
        for block_source, block_target in blocks:
          renamed = renamed.replace(block_source, block_target)
      return renamed
  raise ValueError(f"{name!r} has no counterpart in the other layout; is this a CLIP or SigLIP "
                   "ViT?")


def _interchange_family(state_dict: Mapping[str, Any]) -> _Family:
  return SIGLIP if "visual.head.probe" in state_dict else CLIP


def is_siglip(hf_state_dict: Mapping[str, Any]) -> bool:
  return "vision_model.head.probe" in hf_state_dict


def to_hf(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The interchange layout -> transformers' CLIPModel or SiglipModel state dict."""
  family = _interchange_family(state_dict)
  if "visual.proj" not in state_dict and family is CLIP:
    raise ValueError("transformers' CLIPModel has no ModifiedResNet image tower; only ViT models "
                     "can be written for Hugging Face (open_clip reads both).")
  hf = {}
  for name, value in state_dict.items():
    if name.endswith(("attn.in_proj_weight", "attn.in_proj_bias")):
      prefix, kind = name.rsplit(".in_proj_", 1)
      for part, piece in zip(_QKV, np.split(value, 3, axis=0)):
        hf[rename(f"{prefix}.{part}_proj.{kind}", family.prefixes, _IN_BLOCKS)
           .replace(".attn.", ".self_attn.")] = np.ascontiguousarray(piece)
    elif name.startswith("visual.head.key_value."):
      continue  # Joined to the query's below.
    elif name.startswith("visual.head.query."):
      kind = name.rsplit(".", 1)[1]
      hf[_SIGLIP_HEAD + kind] = np.concatenate(
          [value, state_dict[f"visual.head.key_value.{kind}"]], axis=0)
    elif family is SIGLIP and name in _SIGLIP_SCALARS:
      hf[name] = np.reshape(value, (1,))
    else:
      hf[rename(name, family.prefixes, _IN_BLOCKS)] = (
          np.ascontiguousarray(value.T) if name in family.projections else value)
  return hf


def from_hf(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """transformers' CLIPModel or SiglipModel state dict -> the interchange layout (buffers such as
  position_ids kept)."""
  family = SIGLIP if is_siglip(state_dict) else CLIP
  inverse = [(hf, interchange) for interchange, hf in family.prefixes]
  inverse_blocks = [(hf, interchange) for interchange, hf in _IN_BLOCKS]
  interchange, fused = {}, {}
  for name, value in state_dict.items():
    if name.endswith("position_ids"):
      interchange[name] = value
      continue
    parts = name.split(".")
    if len(parts) > 2 and parts[-3] == "self_attn" and parts[-2] in ("q_proj", "k_proj", "v_proj"):
      fused.setdefault((".".join(parts[:-3]), parts[-1]), {})[parts[-2][0]] = value
      continue
    if name.startswith(_SIGLIP_HEAD):
      kind = name.removeprefix(_SIGLIP_HEAD)
      width = value.shape[0] // 3
      interchange[f"visual.head.query.{kind}"] = value[:width]
      interchange[f"visual.head.key_value.{kind}"] = value[width:]
      continue
    if family is SIGLIP and name in _SIGLIP_SCALARS:
      interchange[name] = np.reshape(value, ())
      continue
    renamed = rename(name, inverse, inverse_blocks)
    interchange[renamed] = (np.ascontiguousarray(value.T) if renamed in family.projections
                            else value)
  for (layer, kind), parts in fused.items():
    prefix = rename(f"{layer}.self_attn.out_proj.{kind}", inverse, inverse_blocks)
    interchange[prefix.replace(".attn.out_proj.", ".attn.in_proj_")] = np.concatenate(
        [parts[part] for part in _QKV], axis=0)
  return interchange


def config_from_hf(hf_config: Mapping[str, Any]) -> configs.CLIPConfig:
  """A clip_jax model config from a CLIPModel's or SiglipModel's config.json (as a dict)."""
  siglip = hf_config.get("model_type") == "siglip"
  family = SIGLIP if siglip else CLIP
  text = {**family.text_defaults, **hf_config.get("text_config", {})}
  vision = {**family.vision_defaults, **hf_config.get("vision_config", {})}
  for tower, settings in (("text_config", text), ("vision_config", vision)):
    if settings["hidden_act"] not in _ACTIVATIONS:
      raise ValueError(f"{tower}.hidden_act={settings['hidden_act']!r}; allowed: "
                       f"{', '.join(_ACTIVATIONS)}.")
  for key in ("hidden_act", "layer_norm_eps"):
    if text[key] != vision[key]:
      raise ValueError(f"text_config.{key}={text[key]!r} but vision_config.{key}="
                       f"{vision[key]!r}; clip_jax uses one value for both towers.")
  mlp_dim = lambda settings: (None if settings["intermediate_size"] == 4 * settings["hidden_size"]
                              else settings["intermediate_size"])
  head_width = lambda settings: settings["hidden_size"] // settings["num_attention_heads"]
  vision_record = tower_layouts.in_hf("siglip" if siglip else "clip")
  text_record = configs.TextConfig(
      context_length=text["max_position_embeddings"], vocab_size=text["vocab_size"],
      width=text["hidden_size"], layers=text["num_hidden_layers"], head_width=head_width(text),
      mlp_dim=mlp_dim(text))
  fields = dict(embed_dim=hf_config.get("projection_dim", 512))
  if siglip:
    text_record = dataclasses.replace(text_record, causal=False, pool="last",
                                      projection_bias=True)
    fields = dict(embed_dim=text.get("projection_size") or text["hidden_size"],
                  init_logit_scale=math.log(10), init_logit_bias=-10.0,
                  preprocessing=configs.SIGLIP_PREPROCESSING)
  return configs.CLIPConfig(
      activation=_ACTIVATIONS[text["hidden_act"]], norm_epsilon=text["layer_norm_eps"],
      vision=vision_record(
          image_size=vision["image_size"], patch_size=vision["patch_size"],
          width=vision["hidden_size"], layers=vision["num_hidden_layers"],
          head_width=head_width(vision), mlp_dim=mlp_dim(vision)),
      text=text_record, **fields)


def is_siglip_config(config: configs.CLIPConfig) -> bool:
  """Whether transformers holds the architecture as a SiglipModel (else a CLIPModel)."""
  return tower_layouts.of(config).family == "siglip"


def hf_config(config: configs.CLIPConfig, logit_scale: float) -> dict[str, Any]:
  """config.json for transformers' CLIPModel or SiglipModel with clip_jax's architecture."""
  vision, text = config.vision, config.text
  siglip = is_siglip_config(config)
  if not tower_layouts.of(config).hf:
    raise ValueError(f"transformers has no {towers.describe(vision)} image tower; allowed: "
                     "--to=open_clip.")
  activation = {ours: theirs for theirs, ours in _ACTIVATIONS.items()}[config.activation]
  tower = lambda record: dict(hidden_size=record.width, num_hidden_layers=record.layers,
                              intermediate_size=record.mlp_dim or 4 * record.width,
                              num_attention_heads=record.width // record.head_width,
                              hidden_act=activation, layer_norm_eps=config.norm_epsilon)
  vision_config = {**tower(vision), "image_size": vision.image_size,
                   "patch_size": vision.patch_size, "num_channels": 3}
  text_config = {**tower(text), "vocab_size": text.vocab_size,
                 "max_position_embeddings": text.context_length}
  if siglip:
    return {
        "architectures": ["SiglipModel"], "model_type": "siglip", "torch_dtype": "float32",
        "text_config": {**text_config, "projection_size": config.embed_dim,
                        "model_type": "siglip_text_model"},
        "vision_config": {**vision_config, "model_type": "siglip_vision_model"},
    }
  return {
      "architectures": ["CLIPModel"],
      "model_type": "clip",
      "projection_dim": config.embed_dim,
      "logit_scale_init_value": logit_scale,
      "torch_dtype": "float32",
      # End of text is the vocabulary's last id (the text tower pools there), start the one before.
      "text_config": {**text_config, "projection_dim": config.embed_dim,
                      "bos_token_id": text.vocab_size - 2, "eos_token_id": text.vocab_size - 1,
                      "model_type": "clip_text_model"},
      "vision_config": {**vision_config, "projection_dim": config.embed_dim,
                        "model_type": "clip_vision_model"},
  }
