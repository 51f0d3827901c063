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
import re
from typing import Any, Mapping

from flax import traverse_util
import numpy as np

from clip_jax.convert import tower_layouts
from clip_jax.models import clip as clip_model
from clip_jax.models import configs
from clip_jax.models import towers

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


def shape_fields(config: configs.CLIPConfig) -> dict[str, Any]:
  """What of a config the tensor shapes determine: not the heads, activation, LayerNorm epsilon
  or initial values, and of a patch tower's image size only its grid (a valid convolution of
  14 px patches makes the same 27 x 27 grid of 378 and 384 px)."""
  fields = configs.function_fields(config)
  fields.pop("activation")
  fields.pop("norm_epsilon")
  fields["vision"].pop("head_width")
  fields["text"].pop("head_width")
  positions = towers.of(config.vision).positions
  if positions is not None:  # the image size as far as the learned positions tell it
    fields["vision"]["image_size"] = positions(config.vision).edge
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
                            layers=tower_layouts.count_blocks(state_dict, "transformer.resblocks."),
                            mlp_dim=tower_layouts.mlp_dim(state_dict, "transformer.", text_width))
  vision, implied = tower_layouts.in_openai_state_dict(state_dict).from_openai(state_dict)
  text = dataclasses.replace(text, **implied.pop("text", {}))
  fields = {"activation": "quick_gelu", **implied}
  config = configs.CLIPConfig(embed_dim=get("text_projection")[1], vision=vision, text=text,
                              **fields)
  if "logit_bias" in state_dict:
    config = dataclasses.replace(config, init_logit_bias=float(state_dict["logit_bias"]))
  for name, named in configs.MODELS.items():
    if shape_fields(named) == shape_fields(config):
      return dataclasses.replace(named, init_logit_bias=config.init_logit_bias), name
  return config, None
