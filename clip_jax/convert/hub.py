"""`hf-hub:<repo>` sources: a Hugging Face hub repository, fetched through huggingface_hub.

The hub's CLIP repositories often hold the same weights several times (safetensors and pickles,
transformers' and open_clip's layouts), each hundreds of megabytes to gigabytes. This fetches the
small JSON files, then only the first weights file `tensor_files.read` would use, into
huggingface_hub's cache (HF_HOME, HF_HUB_CACHE), where a later run, or one offline
(HF_HUB_OFFLINE=1), finds it.
"""

from __future__ import annotations

import os

from clip_jax.convert import hf_layout
from clip_jax.convert import tensor_files

PREFIX = "hf-hub:"


def is_hub_source(src: str) -> bool:
  return src.startswith(PREFIX)


def local_directory(src: str) -> str:
  """The local snapshot of `hf-hub:<owner>/<name>` holding its configs and one set of weights."""
  from huggingface_hub import snapshot_download  # pylint: disable=g-import-not-at-top
  repo = src.removeprefix(PREFIX)
  if repo.count("/") != 1:
    raise ValueError(f"--src={src!r}: expected hf-hub:<owner>/<name>, e.g. "
                     "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K.")
  def download(*patterns):
    try:
      return snapshot_download(repo, allow_patterns=["*.json", hf_layout.SIGLIP_TOKENIZER_FILE,
                                                     *patterns])
    except OSError as error:  # not found, offline without it in the cache, no network, ...
      raise FileNotFoundError(f"{src}: {error}") from None

  folder = ""
  for name in tensor_files.DIRECTORY_WEIGHTS:  # safetensors first: see tensor_files
    folder = download(name)
    if os.path.exists(path := os.path.join(folder, name)):
      if name.endswith(tensor_files.INDEX_SUFFIX):
        return download(*tensor_files.shards(path))
      return folder
  raise FileNotFoundError(f"{src} (at {folder}) holds none of "
                          f"{', '.join(tensor_files.DIRECTORY_WEIGHTS)}.")
