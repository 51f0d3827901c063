"""Weights in and out: OpenAI's, open_clip's and Hugging Face's CLIP and SigLIP checkpoints <->
clip_jax.

Everything passes through one interchange form, OpenAI's state dict (open_clip's CLIP models use
the same names), extended by SigLIP's attention-pooling tower: Hugging Face's layout
(`hf_layout`) and open_clip's timm-based SigLIP (`timm_layout`) are renamed into it, clip_jax's
variables map onto it by rule (`openai_layout`). `python -m clip_jax.convert` is the command line.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import numpy as np

from clip_jax import files
from clip_jax.convert import hf_layout
from clip_jax.convert import hub
from clip_jax.convert import openai_layout
from clip_jax.convert import preprocessing_layout
from clip_jax.convert import tensor_files
from clip_jax.convert import timm_layout
from clip_jax.convert import tower_layouts
from clip_jax.models import configs
from clip_jax.models import towers

EXPORT_FORMATS = ("open_clip", "hf")
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"
OPEN_CLIP_CONFIG = preprocessing_layout.OPEN_CLIP_CONFIG
HF_PREPROCESSOR_CONFIG = preprocessing_layout.HF_PREPROCESSOR_CONFIG
HF_WEIGHTS = "model.safetensors"
HF_CONFIG = "config.json"
HF_TOKENIZER_CONFIG = files.TOKENIZER_OPTIONS
GEMMA_TOKENIZER_FILE = "tokenizer.json"  # SigLIP 2's: Gemma's tokenizer, Hugging Face's format


@dataclasses.dataclass(frozen=True)
class Imported:
  config: configs.CLIPConfig
  variables: dict[str, Any]
  source: dict[str, Any]  # What was read and how the architecture was decided, for model.json.
  tokenizer: str = "clip_bpe"  # the data.tokenizer the weights were trained with
  tokenizer_file: str | None = None  # its model file, which the checkpoint carries


def _is_hf(tensors: dict[str, np.ndarray]) -> bool:
  return any(name.startswith(("text_model.", "vision_model.")) for name in tensors)


def import_weights(src: str, model: str | None = None, activation: str | None = None,
                   preprocessing: Mapping[str, Any] | None = None, *,
                   trust_code: bool = False) -> Imported:
  """Reads a checkpoint (a file, a directory, or `hf-hub:<repo>`: `hub`) and returns clip_jax's
  config and variables for it.

  The architecture is, in order of precedence: the named `model`; a Hugging Face directory's
  config.json; the shapes (`openai_layout.infer_config`). The activation, which shapes cannot
  tell, is `activation`, else what the source publishes (config.json, open_clip_config.json),
  else: QuickGELU for OpenAI's TorchScript archives, and for a plain state dict that of the named
  model with its shapes (QuickGELU for OpenAI's sizes, although LAION's ViT-B-32 for one was
  trained with GELU: pass activation="gelu" for such bare weights).

  The image preprocessing (`image_preparation.Preprocessing`) is the architecture's (OpenAI's,
  SigLIP's for a SiglipModel), changed by what the source publishes beside the weights
  (open_clip's or Hugging Face's config, `preprocessing_layout`), changed in turn by the fields of
  `preprocessing`.

  A TorchScript archive other than OpenAI's releases is refused (`tensor_files.UntrustedCode`)
  unless `trust_code`: loading one runs the code inside it.
  """
  source = {}
  if hub.is_hub_source(src):
    source["hub"] = src.removeprefix(hub.PREFIX)
    src = hub.local_directory(src)
  tensors = tensor_files.read(src, trust_code)
  source["path"] = os.path.abspath(src)
  hf_config_path = os.path.join(src, HF_CONFIG)
  if _is_hf(tensors):
    source["format"] = "hf"
    tensors = hf_layout.from_hf(tensors)
  elif timm_layout.is_open_clip_siglip(tensors):
    source["format"] = "open_clip_siglip"
    tensors = timm_layout.from_open_clip(tensors)
  else:
    source["format"] = "openai_torchscript" if tensor_files.is_torchscript(src) else "state_dict"
  if model is not None:
    config = configs.get_model_config(model)
    source["architecture"] = f"--model={model}"
  elif source["format"] == "hf" and os.path.isfile(hf_config_path):
    with open(hf_config_path) as file:
      config = hf_layout.config_from_hf(json.load(file))
    source["architecture"] = HF_CONFIG
  else:
    config, name = openai_layout.infer_config(tensors)
    source["architecture"] = f"shapes, as {name}" if name else "shapes"
    if source["format"] == "openai_torchscript":
      config = dataclasses.replace(config, activation="quick_gelu")
  # SigLIP's weights were trained with tanh GELU in both towers (big_vision), whatever an
  # open_clip config says of its text tower.
  if activation is None and source["format"] != "hf" and not hf_layout.is_siglip_config(config):
    activation = _open_clip_activation(src)
  if activation is not None:
    config = dataclasses.replace(config, activation=activation)
  published, published_in = preprocessing_layout.read(src)
  given = {key: value for key, value in (preprocessing or {}).items() if value is not None}
  config = dataclasses.replace(config, preprocessing=dataclasses.replace(
      config.preprocessing, **{**published, **given}))
  source["preprocessing"] = {
      key: ("flag" if key in given else published_in if key in published
            else "the architecture's default")
      for key in ("mean", "std", "resize_mode", "interpolation")}
  configs.check(config)
  if "logit_scale" in tensors:
    config = dataclasses.replace(config, init_logit_scale=float(tensors["logit_scale"]))
  source["activation"] = config.activation
  tokenizer, tokenizer_file = _tokenizer(src, config)
  source["tokenizer"] = tokenizer + (f" ({tokenizer_file})" if tokenizer_file else "")
  return Imported(config, openai_layout.from_state_dict(tensors, config), source, tokenizer,
                  tokenizer_file)


# The tokenizers SigLIP weights come with, by the file beside them: SigLIP's SentencePiece model,
# SigLIP 2's Gemma tokenizer.
SIGLIP_TOKENIZERS = {hf_layout.SIGLIP_TOKENIZER_FILE: "siglip", GEMMA_TOKENIZER_FILE: "gemma"}


def _tokenizer(src: str, config: configs.CLIPConfig) -> tuple[str, str | None]:
  """(data.tokenizer name, its model file) of the weights: for a SigLIP architecture the
  SentencePiece model (SigLIP) or Gemma tokenizer (SigLIP 2) the source holds beside it, else
  CLIP's BPE (which ships with clip_jax). SigLIP weights without their tokenizer are refused: no
  tokenizer would give the ids they were trained on."""
  if not hf_layout.is_siglip_config(config):
    return "clip_bpe", None
  directory = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
  for file_name, tokenizer in SIGLIP_TOKENIZERS.items():
    if os.path.isfile(os.path.join(directory, file_name)):
      return tokenizer, os.path.join(directory, file_name)
  raise FileNotFoundError(
      f"{src} holds SigLIP weights but no {' or '.join(SIGLIP_TOKENIZERS)} beside them, the "
      "tokenizer their captions were tokenized with; allowed: the Hugging Face directory (or "
      "hf-hub: repository) with its tokenizer files.")


def _open_clip_activation(src: str) -> str | None:
  """The activation that open_clip_config.json beside the weights names (its model_cfg's
  "quick_gelu", false by default, as in open_clip), or None where there is no such file."""
  model_cfg = (preprocessing_layout.published(src, OPEN_CLIP_CONFIG) or {}).get("model_cfg")
  return None if model_cfg is None else "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"


def open_clip_model_config(config: configs.CLIPConfig) -> dict[str, Any]:
  """open_clip's `model_cfg` for the architecture (what `open_clip.create_model` builds from)."""
  vision, text = config.vision, config.text
  layout = tower_layouts.of(config)
  if layout.family == "siglip":
    return timm_layout.model_cfg(config)
  if layout.open_clip_vision_cfg is None:
    raise ValueError(f"--to=open_clip: open_clip has no {towers.describe(vision)} image tower; "
                     "allowed: --to=hf.")
  model_cfg = dict(
      embed_dim=config.embed_dim, quick_gelu=config.activation == "quick_gelu",
      vision_cfg=layout.open_clip_vision_cfg(vision),
      text_cfg=dict(context_length=text.context_length, vocab_size=text.vocab_size,
                    width=text.width, heads=text.width // text.head_width, layers=text.layers,
                    mlp_ratio=(text.mlp_dim or 4 * text.width) / text.width))
  if config.init_logit_bias is not None:
    model_cfg["init_logit_bias"] = config.init_logit_bias
  return model_cfg


def _hf_tokenizer_files(tokenizer_file: str, context_length: int) -> dict[str, Any]:
  """A SigLIP model's tokenizer as transformers reads it: its file, and a tokenizer_config.json
  making it a SiglipTokenizer (SentencePiece) or Siglip2Tokenizer (Gemma) of the context length,
  over the options the checkpoint carries."""
  name = files.path(tokenizer_file).name
  options_file = files.path(tokenizer_file).parent / files.TOKENIZER_OPTIONS
  options = (json.loads(files.read_tokenizer_model(options_file, "the tokenizer options"))
             if options_file.exists() else {})
  tokenizer_class = "Siglip2Tokenizer" if name == GEMMA_TOKENIZER_FILE else "SiglipTokenizer"
  return {name: files.read_tokenizer_model(tokenizer_file, "the tokenizer model"),
          HF_TOKENIZER_CONFIG: {**options, "tokenizer_class": tokenizer_class,
                                "model_max_length": context_length}}


def export_weights(config: configs.CLIPConfig, variables: dict[str, Any], dst: str,
                   to: str, tokenizer_file: str | None = None) -> list[str]:
  """Writes the model for open_clip (`local-dir:` loadable) or transformers; returns the files.
  A SigLIP model's tokenizer (`tokenizer_file`: SigLIP's SentencePiece model, SigLIP 2's Gemma
  tokenizer.json) goes with it for transformers, with the tokenizer_config.json that makes it a
  SiglipTokenizer or Siglip2Tokenizer of the model's context length."""
  if to not in EXPORT_FORMATS:
    raise ValueError(f"--to={to!r}; allowed: {', '.join(EXPORT_FORMATS)}.")
  state_dict = openai_layout.to_state_dict(variables)
  os.makedirs(dst, exist_ok=True)
  image_size = config.vision.image_size
  if to == "open_clip":
    if hf_layout.is_siglip_config(config):
      state_dict = timm_layout.to_open_clip(state_dict)
    outputs = {OPEN_CLIP_WEIGHTS: state_dict,
               OPEN_CLIP_CONFIG: {"model_cfg": open_clip_model_config(config),
                                  "preprocess_cfg": preprocessing_layout.to_open_clip(
                                      config.preprocessing, image_size)}}
  else:
    outputs = {HF_WEIGHTS: hf_layout.to_hf(state_dict),
               HF_CONFIG: hf_layout.hf_config(config, float(state_dict["logit_scale"])),
               HF_PREPROCESSOR_CONFIG: preprocessing_layout.to_hf(
                   config.preprocessing, image_size,
                   "SiglipImageProcessor" if hf_layout.is_siglip_config(config) else
                   "CLIPImageProcessor")}
  if tokenizer_file is not None and to == "hf" and hf_layout.is_siglip_config(config):
    outputs.update(_hf_tokenizer_files(tokenizer_file, config.text.context_length))
  paths = []
  for name, content in outputs.items():
    path = os.path.join(dst, name)
    if isinstance(content, bytes):  # a tokenizer's file, as it came
      with open(path, "wb") as file:
        file.write(content)
    elif name.endswith(".json"):
      with open(path, "w") as file:
        json.dump(content, file, indent=2)
    else:
      tensor_files.write_safetensors(content, path)
    paths.append(path)
  return paths
