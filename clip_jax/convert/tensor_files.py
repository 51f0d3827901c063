"""Weight files of the PyTorch world, read into and written from numpy arrays.

Weights are data, never code. safetensors files need no PyTorch (read through safetensors' Flax
backend, which knows bfloat16) and are preferred wherever a directory or repository has them.
Pickled `.pt`/`.bin`/`.pth` state dicts (and training checkpoints that wrap one in "state_dict",
DataParallel's `module.` prefixes removed) are read by `torch.load(weights_only=True)`, which
refuses anything but tensors and containers on the torch versions that enforce it. TorchScript
archives are code that PyTorch runs as it loads them: only OpenAI's published releases
(`OPENAI_RELEASES`) are loaded, or any with `trust_code=True`.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from typing import Mapping

import jax.numpy as jnp
import numpy as np

from clip_jax import files

SAFETENSORS_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
INDEX_SUFFIX = ".index.json"
# A model directory's weights, in the order they are looked for: safetensors before pickles,
# transformers' names before open_clip's; an index lists the shards of a sharded checkpoint.
DIRECTORY_WEIGHTS = ("model.safetensors", "open_clip_model.safetensors",
                     "model.safetensors.index.json", "pytorch_model.bin",
                     "open_clip_pytorch_model.bin", "pytorch_model.bin.index.json")
# The first torch whose weights_only=True unpickler cannot be made to run code (CVE-2025-32434).
MIN_TORCH = (2, 6)
# SHA-256 of OpenAI's TorchScript releases: the digest is part of each one's download URL
# (docs/weights.md), and OpenAI's clip.load checks it.
OPENAI_RELEASES = {
    "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762": "RN50.pt",
    "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599": "RN101.pt",
    "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd": "RN50x4.pt",
    "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa": "RN50x16.pt",
    "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c": "RN50x64.pt",
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af": "ViT-B-32.pt",
    "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f": "ViT-B-16.pt",
    "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836": "ViT-L-14.pt",
    "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02": "ViT-L-14-336px.pt",
}


class UntrustedCode(ValueError):
  """A weights file that would run code as it loads, which clip_jax refuses."""


def _import_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError("Reading a pickled PyTorch checkpoint (.pt, .pth, .bin) needs torch "
                      f">= {'.'.join(map(str, MIN_TORCH))}: `pip install torch` (the CPU build "
                      "will do), or use the weights as .safetensors, which clip_jax reads "
                      "without torch.") from error
  version = tuple(int(part) for part in re.findall(r"\d+", torch.__version__)[:2])
  if version < MIN_TORCH:
    raise ImportError(f"torch {torch.__version__} can be made to run code by a pickled "
                      "checkpoint even with weights_only=True (CVE-2025-32434); reading .pt, "
                      f".pth and .bin files needs torch >= {'.'.join(map(str, MIN_TORCH))}, or "
                      "use the weights as .safetensors.")
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


def _read_pickle(path: str, trust_code: bool) -> dict[str, np.ndarray]:
  torch = _import_torch()
  if _is_torchscript(path):
    if not trust_code and (digest := files.sha256(path)) not in OPENAI_RELEASES:
      raise UntrustedCode(
          f"{path} is a TorchScript archive, code that PyTorch runs as it loads, and not one of "
          f"OpenAI's releases (its SHA-256 {digest} is not in docs/weights.md): use the "
          "weights as .safetensors (the hub's mirrors are listed in docs/weights.md), or pass "
          "--trust_code if you trust whoever made the file to run code on this machine.")
    state_dict = torch.jit.load(path, map_location="cpu").state_dict()
  else:
    try:
      state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
      raise UntrustedCode(
          f"{path} is a pickle that holds more than tensors, which torch.load(weights_only=True) "
          f"refused ({str(error).strip().splitlines()[-1]}): use the weights as .safetensors."
      ) from None
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
  """The weight files a sharded checkpoint's index lists: names of files in its directory."""
  with open(index_path) as file:
    names = sorted(set(json.load(file)["weight_map"].values()))
  for name in names:
    if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
      raise ValueError(f"{index_path} names the shard {name!r} outside its directory; allowed: "
                       "file names in the index's directory.")
  return names


def weight_files(directory: str) -> list[str] | None:
  """The weight files of the first of `DIRECTORY_WEIGHTS` that `directory` holds (an index's
  shards for an index), by name; None where it holds none."""
  for name in DIRECTORY_WEIGHTS:
    if os.path.exists(path := os.path.join(directory, name)):
      return shards(path) if name.endswith(INDEX_SUFFIX) else [name]
  return None


def _read_directory(path: str, trust_code: bool) -> dict[str, np.ndarray]:
  """A Hugging Face model directory (as the hub's repositories and `convert --to` lay them out,
  for transformers or open_clip): one weights file, or shards listed by an index."""
  names = weight_files(path)
  if names is None:
    raise FileNotFoundError(f"{path} holds none of {', '.join(DIRECTORY_WEIGHTS)}.")
  return {key: value for name in names
          for key, value in read(os.path.join(path, name), trust_code).items()}


def read(path: str, trust_code: bool = False) -> dict[str, np.ndarray]:
  """The named tensors of a weight file or Hugging Face directory, as numpy arrays. A
  TorchScript archive not among OpenAI's releases raises UntrustedCode unless `trust_code`."""
  if os.path.isdir(path):
    return _read_directory(path, trust_code)
  if not os.path.exists(path):
    raise FileNotFoundError(f"No such weights file: {path}")
  if path.endswith(SAFETENSORS_SUFFIX):
    return _read_safetensors(path)
  if path.endswith(PICKLE_SUFFIXES):
    return _read_pickle(path, trust_code)
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
