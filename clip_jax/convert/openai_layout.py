"""clip_jax variables <-> the state dict of OpenAI's CLIP (which open_clip's CLIP shares).

clip_jax's parameter names mirror OpenAI's, so the mapping is a handful of rules rather than a
table: module paths join with dots, numbered blocks (`resblocks_3`, `layer1_0`) become indices,
Flax leaf names become PyTorch's (`kernel`/`scale`/`embedding` -> `weight`, BatchNorm `mean`/`var`
-> `running_mean`/`running_var`), and kernels are transposed (Dense [in, out] <- Linear
[out, in]; Conv [H, W, in, out] <- [out, in, H, W]). The text tower's parameters sit at the top
level of OpenAI's model. `infer_config` reads the architecture from the tensor shapes, as
OpenAI's `build_model` does.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping

from flax import traverse_util
import numpy as np

from clip_jax.models import clip as clip_model
from clip_jax.models import configs
from clip_jax.models import resnet
from clip_jax.models import siglip_vision
from clip_jax.models import vision as vision_lib

# Entries of released state dicts that are not parameters: OpenAI's TorchScript archives carry
# the model's sizes, PyTorch's BatchNorm counts its updates, HF buffers positions.
NOT_PARAMETERS = re.compile(r"^(input_resolution|context_length|vocab_size)$|num_batches_tracked$"
                            r"|position_ids$|attn_mask$")
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias",
               "mean": "running_mean", "var": "running_var"}
_NUMBERED = re.compile(r"^(resblocks|layer\d)_(\d+)$")
_DOWNSAMPLE = {"conv": "0", "bn": "1"}  # OpenAI's downsample is nn.Sequential(pool, conv, bn)


def torch_name(path: tuple[str, ...]) -> str:
  """The OpenAI state-dict name of the clip_jax variable at `path` (collection dropped)."""
  *modules, leaf = path
  if modules and modules[0] == "text":
    modules = modules[1:]
  parts = []
  for module in modules:
    if match := _NUMBERED.match(module):
      parts += [match[1], match[2]]
    elif parts and parts[-1] == "downsample":
      parts.append(_DOWNSAMPLE[module])
    else:
      parts.append(module)
  if parts[-2:] == ["attn", "in_proj"]:  # nn.MultiheadAttention's fused projection.
    return ".".join(parts[:-1] + [f"in_proj_{_LEAF_NAMES[leaf]}"])
  # A module's Flax leaf takes PyTorch's name; a parameter of its own keeps its name.
  return ".".join(parts + [_LEAF_NAMES.get(leaf, leaf) if modules else leaf])


def _to_torch(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel":
    return value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1)
  return value


def _from_torch(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel":
    return value.T if value.ndim == 2 else value.transpose(2, 3, 1, 0)
  return value


def abstract_variables(config: configs.CLIPConfig) -> dict[str, Any]:
  """Shapes and dtypes of the model's variables, without computing any."""
  if config.scan:
    config = dataclasses.replace(config, scan=False)  # The layout here is the unrolled one.
  return clip_model.abstract_variables(config)


def to_state_dict(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """clip_jax variables (unrolled layers) -> OpenAI's state dict of float32 numpy arrays."""
  state_dict = {}
  for (_, *path), value in traverse_util.flatten_dict(variables).items():
    path = tuple(path)
    state_dict[torch_name(path)] = np.array(
        _to_torch(path, np.asarray(value, np.float32)), order="C")
  return state_dict


def from_state_dict(state_dict: Mapping[str, np.ndarray],
                    config: configs.CLIPConfig) -> dict[str, Any]:
  """OpenAI's state dict -> clip_jax variables for `config`, every shape checked.

  Raises a ValueError listing the parameters the state dict lacks, those it has that the model
  does not, and any shape that differs: each means `config` is not the checkpoint's architecture.
  """
  remaining = {name for name in state_dict if not NOT_PARAMETERS.search(name)}
  flat, missing, wrong_shapes = {}, [], []
  for (collection, *path), leaf in traverse_util.flatten_dict(abstract_variables(config)).items():
    path = tuple(path)
    name = torch_name(path)
    if name not in state_dict:
      missing.append(name)
      continue
    remaining.discard(name)
    value = _from_torch(path, np.asarray(state_dict[name], np.float32))
    if value.shape != leaf.shape:
      wrong_shapes.append(f"{name}: {tuple(state_dict[name].shape)} in the file, "
                          f"{_to_torch(path, np.zeros(leaf.shape)).shape} in the model")
      continue
    flat[(collection,) + path] = value
  problems = []
  if missing:
    problems.append(f"missing from the file: {', '.join(missing[:8])}"
                    + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
  if remaining:
    unused = sorted(remaining)
    problems.append(f"not in the model: {', '.join(unused[:8])}"
                    + (f" and {len(unused) - 8} more" if len(unused) > 8 else ""))
  problems += wrong_shapes[:8]
  if problems:
    raise ValueError("The weights do not fit the architecture; " + "; ".join(problems) + ".")
  return traverse_util.unflatten_dict(flat)


def _count_blocks(state_dict: Mapping[str, Any], prefix: str) -> int:
  """How many numbered blocks `prefix<N>.` the state dict holds."""
  pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
  return len({match[1] for name in state_dict if (match := pattern.match(name))})


def _mlp_dim(state_dict: Mapping[str, Any], prefix: str, width: int) -> int | None:
  mlp_dim = state_dict[f"{prefix}resblocks.0.mlp.c_fc.weight"].shape[0]
  return None if mlp_dim == 4 * width else mlp_dim


def shape_fields(config: configs.CLIPConfig) -> dict[str, Any]:
  """What of a config the tensor shapes determine: not the heads, activation, LayerNorm epsilon
  or initial values, and of a patch tower's image size only its grid (a valid convolution of
  14 px patches makes the same 27 x 27 grid of 378 and 384 px)."""
  fields = configs.function_fields(config)
  fields.pop("activation")
  fields.pop("norm_epsilon")
  fields["vision"].pop("head_width")
  fields["text"].pop("head_width")
  if "patch_size" in fields["vision"]:
    fields["vision"]["image_size"] //= fields["vision"]["patch_size"]
  return fields


def infer_config(state_dict: Mapping[str, Any]) -> tuple[configs.CLIPConfig, str | None]:
  """The architecture of an OpenAI-layout state dict, read from its shapes as `build_model` does.

  The shapes do not say how wide the attention heads are, nor which GELU the weights were trained
  with: those come from the named model (`configs.MODELS`) with the same shapes, whose name is
  returned too; otherwise heads are 64 wide, as in every OpenAI model, with QuickGELU.
  """
  get = lambda name: np.shape(state_dict[name])
  text_width = get("ln_final.weight")[0]
  text = configs.TextConfig(context_length=get("positional_embedding")[0],
                            vocab_size=get("token_embedding.weight")[0], width=text_width,
                            layers=_count_blocks(state_dict, "transformer.resblocks."),
                            mlp_dim=_mlp_dim(state_dict, "transformer.", text_width))
  fields = dict(activation="quick_gelu")
  if "visual.head.probe" in state_dict:  # SigLIP's: grid positions only, attention pooling
    width, _, patch, _ = get("visual.conv1.weight")
    vision = siglip_vision.SigLIPVisionConfig(
        image_size=patch * round(get("visual.positional_embedding")[0] ** 0.5), patch_size=patch,
        width=width, layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
        mlp_dim=_mlp_dim(state_dict, "visual.transformer.", width))
    text = dataclasses.replace(text, causal=False, pool="last", projection_bias=True)
    fields = dict(activation="gelu_tanh", norm_epsilon=1e-6, init_logit_scale=math.log(10),
                  preprocessing=configs.SIGLIP_PREPROCESSING)
  elif "visual.proj" in state_dict:
    width, _, patch, _ = get("visual.conv1.weight")
    grid = round((get("visual.positional_embedding")[0] - 1) ** 0.5)
    vision = vision_lib.VisionTransformerConfig(
        image_size=patch * grid, patch_size=patch, width=width,
        layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
        mlp_dim=_mlp_dim(state_dict, "visual.transformer.", width))
  else:
    stages = tuple(_count_blocks(state_dict, f"visual.layer{stage}.") for stage in range(1, 5))
    stages = stages[:stages.index(0)] if 0 in stages else stages
    grid = round((get("visual.attnpool.positional_embedding")[0] - 1) ** 0.5)
    vision = resnet.ModifiedResNetConfig(image_size=grid * 2 ** (len(stages) + 1),
                                          layers=stages,
                                          width=get("visual.layer1.0.conv1.weight")[0])
  config = configs.CLIPConfig(embed_dim=get("text_projection")[1], vision=vision, text=text,
                              **fields)
  if "logit_bias" in state_dict:
    config = dataclasses.replace(config, init_logit_bias=float(state_dict["logit_bias"]))
  for name, named in configs.MODELS.items():
    if shape_fields(named) == shape_fields(config):
      return dataclasses.replace(named, init_logit_bias=config.init_logit_bias), name
  return config, None
