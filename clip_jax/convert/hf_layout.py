"""Hugging Face `CLIPModel` <-> OpenAI's layout: parameter names, fused attention, the config.

transformers' CLIP is OpenAI's ViT CLIP under other names, with q/k/v as three Linear layers
instead of one fused `in_proj`, and the two projections stored as Linear weights (transposed).
It has no ModifiedResNet. Reading needs neither torch nor transformers: config.json is read with
transformers' defaults for the keys it leaves out.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from clip_jax.models import configs
from clip_jax.models import vision as vision_lib

# (OpenAI prefix, HF prefix), whole names where they end in "$".
_PREFIXES = [
    ("token_embedding.", "text_model.embeddings.token_embedding."),
    ("positional_embedding$", "text_model.embeddings.position_embedding.weight$"),
    ("transformer.resblocks.", "text_model.encoder.layers."),
    ("ln_final.", "text_model.final_layer_norm."),
    ("visual.class_embedding$", "vision_model.embeddings.class_embedding$"),
    ("visual.conv1.", "vision_model.embeddings.patch_embedding."),
    ("visual.positional_embedding$", "vision_model.embeddings.position_embedding.weight$"),
    ("visual.ln_pre.", "vision_model.pre_layrnorm."),  # sic: transformers' name
    ("visual.transformer.resblocks.", "vision_model.encoder.layers."),
    ("visual.ln_post.", "vision_model.post_layernorm."),
    ("visual.proj$", "visual_projection.weight$"),
    ("text_projection$", "text_projection.weight$"),
    ("logit_scale$", "logit_scale$"),
]
_IN_BLOCKS = [(".ln_1.", ".layer_norm1."), (".ln_2.", ".layer_norm2."),
              (".mlp.c_fc.", ".mlp.fc1."), (".mlp.c_proj.", ".mlp.fc2."),
              (".attn.out_proj.", ".self_attn.out_proj.")]
_PROJECTIONS = ("visual.proj", "text_projection")  # [W, E] in OpenAI's layout, [E, W] in HF's
_QKV = ("q", "k", "v")

# transformers' CLIPTextConfig / CLIPVisionConfig defaults, for config.json files that omit keys.
_TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048,
                      num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77,
                      hidden_act="quick_gelu", layer_norm_eps=1e-5)
_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                        num_attention_heads=12, image_size=224, patch_size=32,
                        hidden_act="quick_gelu", layer_norm_eps=1e-5)
_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu"}  # HF name -> clip_jax name


def _rename(name: str, pairs: list[tuple[str, str]], blocks: list[tuple[str, str]]) -> str:
  for source, target in pairs:
    whole = source.endswith("$")
    if (name == source[:-1]) if whole else name.startswith(source):
      renamed = target.rstrip("$") + name[len(source.rstrip("$")):]
      if ".layers." in renamed or ".resblocks." in renamed:
        for block_source, block_target in blocks:
          renamed = renamed.replace(block_source, block_target)
      return renamed
  raise ValueError(f"{name!r} has no counterpart in the other layout; is this a CLIP ViT?")


def to_hf(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """OpenAI's layout -> transformers' CLIPModel state dict."""
  if "visual.proj" not in state_dict:
    raise ValueError("transformers' CLIPModel has no ModifiedResNet image tower; only ViT models "
                     "can be written for Hugging Face (open_clip reads both).")
  hf = {}
  for name, value in state_dict.items():
    if name.endswith(("attn.in_proj_weight", "attn.in_proj_bias")):
      prefix, kind = name.rsplit(".in_proj_", 1)
      for part, piece in zip(_QKV, np.split(value, 3, axis=0)):
        hf[_rename(f"{prefix}.{part}_proj.{kind}", _PREFIXES, _IN_BLOCKS)
           .replace(".attn.", ".self_attn.")] = np.ascontiguousarray(piece)
    else:
      hf[_rename(name, _PREFIXES, _IN_BLOCKS)] = (
          np.ascontiguousarray(value.T) if name in _PROJECTIONS else value)
  return hf


def from_hf(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """transformers' CLIPModel state dict -> OpenAI's layout (buffers such as position_ids kept)."""
  inverse = [(hf, openai) for openai, hf in _PREFIXES]
  inverse_blocks = [(hf, openai) for openai, hf in _IN_BLOCKS]
  openai, fused = {}, {}
  for name, value in state_dict.items():
    if name.endswith("position_ids"):
      openai[name] = value
      continue
    parts = name.split(".")
    if len(parts) > 2 and parts[-3] == "self_attn" and parts[-2] in ("q_proj", "k_proj", "v_proj"):
      fused.setdefault((".".join(parts[:-3]), parts[-1]), {})[parts[-2][0]] = value
      continue
    renamed = _rename(name, inverse, inverse_blocks)
    openai[renamed] = np.ascontiguousarray(value.T) if renamed in _PROJECTIONS else value
  for (layer, kind), parts in fused.items():
    prefix = _rename(f"{layer}.self_attn.out_proj.{kind}", inverse, inverse_blocks)
    openai[prefix.replace(".attn.out_proj.", ".attn.in_proj_")] = np.concatenate(
        [parts[part] for part in _QKV], axis=0)
  return openai


def config_from_hf(hf_config: Mapping[str, Any]) -> configs.CLIPConfig:
  """A clip_jax model config from a CLIPModel's config.json (as a dict)."""
  text = {**_TEXT_DEFAULTS, **hf_config.get("text_config", {})}
  vision = {**_VISION_DEFAULTS, **hf_config.get("vision_config", {})}
  for tower, settings in (("text_config", text), ("vision_config", vision)):
    if settings["layer_norm_eps"] != 1e-5:
      raise ValueError(f"{tower}.layer_norm_eps={settings['layer_norm_eps']}; clip_jax's CLIP "
                       "uses 1e-05, as OpenAI's; allowed: 1e-05.")
    if settings["hidden_act"] not in _ACTIVATIONS:
      raise ValueError(f"{tower}.hidden_act={settings['hidden_act']!r}; allowed: "
                       f"{', '.join(_ACTIVATIONS)}.")
  if text["hidden_act"] != vision["hidden_act"]:
    raise ValueError(f"text_config.hidden_act={text['hidden_act']!r} but vision_config."
                     f"hidden_act={vision['hidden_act']!r}; clip_jax uses one activation for "
                     "both towers.")
  mlp_dim = lambda settings: (None if settings["intermediate_size"] == 4 * settings["hidden_size"]
                              else settings["intermediate_size"])
  return configs.CLIPConfig(
      embed_dim=hf_config.get("projection_dim", 512),
      activation=_ACTIVATIONS[text["hidden_act"]],
      vision=vision_lib.VisionTransformerConfig(
          image_size=vision["image_size"], patch_size=vision["patch_size"],
          width=vision["hidden_size"], layers=vision["num_hidden_layers"],
          head_width=vision["hidden_size"] // vision["num_attention_heads"],
          mlp_dim=mlp_dim(vision)),
      text=configs.TextConfig(
          context_length=text["max_position_embeddings"], vocab_size=text["vocab_size"],
          width=text["hidden_size"], layers=text["num_hidden_layers"],
          head_width=text["hidden_size"] // text["num_attention_heads"], mlp_dim=mlp_dim(text)))


def hf_config(config: configs.CLIPConfig, logit_scale: float) -> dict[str, Any]:
  """config.json for transformers' CLIPModel with clip_jax's architecture."""
  vision, text = config.vision, config.text
  if not isinstance(vision, vision_lib.VisionTransformerConfig):
    raise ValueError("transformers' CLIPModel has no ModifiedResNet image tower.")
  tower = lambda record: dict(hidden_size=record.width, num_hidden_layers=record.layers,
                              intermediate_size=record.mlp_dim or 4 * record.width,
                              num_attention_heads=record.width // record.head_width,
                              hidden_act=config.activation, layer_norm_eps=1e-5,
                              projection_dim=config.embed_dim)
  return {
      "architectures": ["CLIPModel"],
      "model_type": "clip",
      "projection_dim": config.embed_dim,
      "logit_scale_init_value": logit_scale,
      "torch_dtype": "float32",
      # End of text is the vocabulary's last id (the text tower pools there), start the one before.
      "text_config": {**tower(text), "vocab_size": text.vocab_size,
                      "max_position_embeddings": text.context_length,
                      "bos_token_id": text.vocab_size - 2, "eos_token_id": text.vocab_size - 1,
                      "model_type": "clip_text_model"},
      "vision_config": {**tower(vision), "image_size": vision.image_size,
                        "patch_size": vision.patch_size, "num_channels": 3,
                        "model_type": "clip_vision_model"},
  }
