"""Weight files of the PyTorch world, read into and written from numpy arrays.

safetensors files need no PyTorch (read through safetensors' Flax backend, which knows
bfloat16). Pickled `.pt`/`.bin`/`.pth` files need torch: OpenAI's TorchScript archives, plain
state dicts, and training checkpoints that wrap one in "state_dict" (DataParallel's `module.`
prefixes removed).
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Mapping

import jax.numpy as jnp
import numpy as np

SAFETENSORS_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
# A model directory's weights, in the order they are looked for: transformers', then open_clip's.
DIRECTORY_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors",
                     "open_clip_pytorch_model.bin")
DIRECTORY_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _import_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError("Reading a pickled PyTorch checkpoint (.pt, .pth, .bin) needs torch: "
                      "`pip install torch` (the CPU build will do), or convert the file to "
                      ".safetensors, which clip_jax reads without torch.") from error
  return torch


def _is_torchscript(path: str) -> bool:
  """OpenAI's released `.pt` files are TorchScript archives: zips with compiled code inside."""
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as archive:
    return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def _to_numpy(tensor) -> np.ndarray:
  if tensor.is_floating_point():
    tensor = tensor.float()  # bfloat16 and float16 alike: clip_jax keeps float32 parameters.
  return tensor.detach().cpu().numpy()


def _read_pickle(path: str) -> dict[str, np.ndarray]:
  torch = _import_torch()
  if _is_torchscript(path):
    state_dict = torch.jit.load(path, map_location="cpu").state_dict()
  else:
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state_dict, Mapping) and isinstance(state_dict.get("state_dict"), Mapping):
      state_dict = state_dict["state_dict"]  # open_clip's training checkpoints
  if not isinstance(state_dict, Mapping):
    raise ValueError(f"{path} holds a {type(state_dict).__name__}, not a state dict.")
  return {name.removeprefix("module."): _to_numpy(value) for name, value in state_dict.items()}


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  from safetensors import flax as safetensors_flax  # pylint: disable=g-import-not-at-top
  as_numpy = lambda value: np.asarray(
      value.astype(jnp.float32) if jnp.issubdtype(value.dtype, jnp.floating) else value)
  return {name.removeprefix("module."): as_numpy(value)
          for name, value in safetensors_flax.load_file(path).items()}


def shards(index_path: str) -> list[str]:
  """The weight files a sharded checkpoint's index lists."""
  with open(index_path) as file:
    return sorted(set(json.load(file)["weight_map"].values()))


def _read_directory(path: str) -> dict[str, np.ndarray]:
  """A Hugging Face model directory (as the hub's repositories and `convert --to` lay them out,
  for transformers or open_clip): one weights file, or shards listed by an index."""
  for name in DIRECTORY_WEIGHTS:
    if os.path.exists(os.path.join(path, name)):
      return read(os.path.join(path, name))
  for index in DIRECTORY_INDEXES:
    if os.path.exists(index_path := os.path.join(path, index)):
      return {name: value for shard in shards(index_path)
              for name, value in read(os.path.join(path, shard)).items()}
  raise FileNotFoundError(f"{path} holds none of {', '.join(DIRECTORY_WEIGHTS)}, and no sharded "
                          f"checkpoint's index ({', '.join(DIRECTORY_INDEXES)}).")


def read(path: str) -> dict[str, np.ndarray]:
  """The named tensors of a weight file or Hugging Face directory, as numpy arrays."""
  if os.path.isdir(path):
    return _read_directory(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"No such weights file: {path}")
  if path.endswith(SAFETENSORS_SUFFIX):
    return _read_safetensors(path)
  if path.endswith(PICKLE_SUFFIXES):
    return _read_pickle(path)
  raise ValueError(f"{path}: unknown weights format; allowed: {SAFETENSORS_SUFFIX}, "
                   f"{', '.join(PICKLE_SUFFIXES)} or a Hugging Face model directory.")


def is_torchscript(path: str) -> bool:
  return os.path.isfile(path) and path.endswith(PICKLE_SUFFIXES) and _is_torchscript(path)


def write_safetensors(tensors: Mapping[str, np.ndarray], path: str) -> None:
  """Float32 tensors to a safetensors file that PyTorch tools load as they are."""
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  safetensors_numpy.save_file({name: np.array(value, order="C")  # (keeps 0-d arrays 0-d)
                               for name, value in tensors.items()}, path,
                              metadata={"format": "pt"})  # transformers requires "pt"
