"""`hf-hub:<repo>` sources: a Hugging Face hub repository, fetched through huggingface_hub.

The hub's CLIP repositories often hold the same weights several times (safetensors and pickles,
transformers' and open_clip's layouts), each hundreds of megabytes to gigabytes. This fetches the
small JSON files, then only the first weights file `tensor_files.read` would use, into
huggingface_hub's cache (HF_HOME, HF_HUB_CACHE), where a later run, or one offline
(HF_HUB_OFFLINE=1), finds it.
"""

from __future__ import annotations

import os

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
  folder = ""
  for name in tensor_files.DIRECTORY_WEIGHTS:
    folder = snapshot_download(repo, allow_patterns=[name, "*.json"])
    if os.path.exists(os.path.join(folder, name)):
      return folder
  for index in tensor_files.DIRECTORY_INDEXES:
    if os.path.exists(index_path := os.path.join(folder, index)):
      return snapshot_download(repo, allow_patterns=["*.json", *tensor_files.shards(index_path)])
  raise FileNotFoundError(f"{src} (at {folder}) holds none of "
                          f"{', '.join(tensor_files.DIRECTORY_WEIGHTS)}, and no sharded "
                          f"checkpoint's index.")
