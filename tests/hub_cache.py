"""Hugging Face hub repositories laid out as huggingface_hub caches them, for tests of `hf-hub:`
sources on a machine without internet (HF_HUB_CACHE=<cache> HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import os
import pathlib
import shutil

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_repository(cache: str | os.PathLike, repo: str,
                   files: dict[str, pathlib.Path | str]) -> None:
  """The files (a path to copy, or text) as blobs, a snapshot of links to them, and the ref
  `main` naming the snapshot's commit; replaces the repository if the cache has it."""
  folder = pathlib.Path(cache) / f"models--{repo.replace('/', '--')}"
  shutil.rmtree(folder, ignore_errors=True)
  (folder / "blobs").mkdir(parents=True)
  (folder / "snapshots" / COMMIT).mkdir(parents=True)
  (folder / "refs").mkdir()
  (folder / "refs" / "main").write_text(COMMIT)
  for index, (name, content) in enumerate(files.items()):
    blob = folder / "blobs" / f"blob{index}"
    if isinstance(content, pathlib.Path):
      blob.write_bytes(content.read_bytes())
    else:
      blob.write_text(content)
    os.symlink(f"../../blobs/{blob.name}", folder / "snapshots" / COMMIT / name)


def offline_environment(cache: str | os.PathLike) -> dict[str, str]:
  """What points huggingface_hub at `cache` alone."""
  return {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
