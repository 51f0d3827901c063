"""open_clip's SigLIP checkpoints <-> clip_jax's interchange layout.

open_clip builds SigLIP's image tower from timm (`vit_*_siglip_*`, under `visual.trunk.`) and its
text tower as a `CustomTextCLIP` (under `text.`), with OpenAI's block names there. timm's names
map onto the interchange layout (`openai_layout`, with SigLIP's `visual.head.` for the attention
pool) one to one: q/k/v are fused as in `in_proj` (`attn.qkv`), the pool keeps the probe's query
apart from the patches' keys and values (`q`, `kv`), as clip_jax does, and the positions carry a
leading batch axis. The text projection is a Linear with a bias.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from clip_jax.convert import hf_layout
from clip_jax.models import configs

TRUNK = "visual.trunk."
# (interchange, open_clip) name pieces, whole names where they end in "$".
_VISUAL = [
    ("visual.conv1.", TRUNK + "patch_embed.proj."),
    ("visual.positional_embedding$", TRUNK + "pos_embed$"),
    ("visual.transformer.resblocks.", TRUNK + "blocks."),
    ("visual.ln_post.", TRUNK + "norm."),
    ("visual.head.probe$", TRUNK + "attn_pool.latent$"),
    ("visual.head.query.", TRUNK + "attn_pool.q."),
    ("visual.head.key_value.", TRUNK + "attn_pool.kv."),
    ("visual.head.out_proj.", TRUNK + "attn_pool.proj."),
    ("visual.head.ln.", TRUNK + "attn_pool.norm."),
    ("visual.head.mlp.c_fc.", TRUNK + "attn_pool.mlp.fc1."),
    ("visual.head.mlp.c_proj.", TRUNK + "attn_pool.mlp.fc2."),
]
_IN_BLOCKS = [(".ln_1.", ".norm1."), (".ln_2.", ".norm2."),
              (".attn.in_proj_weight", ".attn.qkv.weight"),
              (".attn.in_proj_bias", ".attn.qkv.bias"), (".attn.out_proj.", ".attn.proj."),
              (".mlp.c_fc.", ".mlp.fc1."), (".mlp.c_proj.", ".mlp.fc2.")]
_TEXT = "text."
_SCALARS = ("logit_scale", "logit_bias")
# timm's SigLIP image towers by (width, depth, MLP width): the variant in their names.
TIMM_VARIANTS = {(768, 12, 3072): "base", (1024, 24, 4096): "large", (1152, 27, 4304): "so400m",
                 (1536, 40, 6144): "giantopt"}


def is_open_clip_siglip(tensors: Mapping[str, Any]) -> bool:
  return TRUNK + "attn_pool.latent" in tensors


def from_open_clip(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """open_clip's SigLIP state dict (a CustomTextCLIP's, or a CLIP's with the text tower at the
  top level) -> the interchange layout."""
  inverse = [(theirs, ours) for ours, theirs in _VISUAL]
  inverse_blocks = [(theirs, ours) for ours, theirs in _IN_BLOCKS]
  interchange = {}
  for name, value in tensors.items():
    if name.startswith(TRUNK):
      renamed = hf_layout.rename(name, inverse, inverse_blocks)
      interchange[renamed] = value[0] if renamed == "visual.positional_embedding" else value
      continue
    name = name.removeprefix(_TEXT)
    if name == "text_projection.weight":
      interchange["text_projection"] = np.ascontiguousarray(value.T)
    elif name == "text_projection.bias":
      interchange["text_projection_bias"] = value
    else:
      interchange[name] = value
  return interchange


def to_open_clip(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The interchange layout of a SigLIP model -> open_clip's CustomTextCLIP state dict."""
  tensors = {}
  for name, value in state_dict.items():
    if name.startswith("visual."):
      positions = name == "visual.positional_embedding"
      tensors[hf_layout.rename(name, _VISUAL, _IN_BLOCKS)] = value[None] if positions else value
    elif name == "text_projection":
      tensors[_TEXT + "text_projection.weight"] = np.ascontiguousarray(value.T)
    elif name == "text_projection_bias":
      tensors[_TEXT + "text_projection.bias"] = value
    elif name in _SCALARS:
      tensors[name] = value
    else:
      tensors[_TEXT + name] = value
  return tensors


def model_cfg(config: configs.CLIPConfig) -> dict[str, Any]:
  """open_clip's model_cfg for a SigLIP architecture: timm's tower of the same sizes by name
  (open_clip builds timm towers by name only), the text tower as SigLIP's."""
  vision, text = config.vision, config.text
  variant = TIMM_VARIANTS.get((vision.width, vision.layers, vision.mlp_dim or 4 * vision.width))
  if variant is None:
    raise ValueError(f"open_clip builds SigLIP image towers from timm's named models only, and "
                     f"none has width {vision.width}, {vision.layers} layers and MLP "
                     f"{vision.mlp_dim}; allowed: the sizes of the named SigLIP models, or "
                     "--to=hf.")
  return dict(
      embed_dim=config.embed_dim, init_logit_bias=config.init_logit_bias, custom_text=True,
      vision_cfg=dict(image_size=vision.image_size,
                      timm_model_name=f"vit_{variant}_patch{vision.patch_size}_siglip_"
                                      f"{vision.image_size}",
                      timm_model_pretrained=False, timm_pool="map", timm_proj="none"),
      text_cfg=dict(context_length=text.context_length, vocab_size=text.vocab_size,
                    width=text.width, heads=text.width // text.head_width, layers=text.layers,
                    mlp_ratio=(text.mlp_dim or 4 * text.width) / text.width,
                    no_causal_mask=not text.causal, proj_bias=text.projection_bias,
                    pool_type=text.pool if text.pool == "last" else "argmax",
                    norm_kwargs={"eps": config.norm_epsilon},
                    act_kwargs={"approximate": "tanh"}))
