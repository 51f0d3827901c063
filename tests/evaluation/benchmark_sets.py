"""Test sets in the benchmark's WebDataset layout (CLIP_benchmark's, as DataComp's download
script fetches it), made up: images of four flat quadrants, so that the evaluation view of an image
of the model's size is the image itself and a test can compute the features independently."""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
from PIL import Image

IMAGE_SIZE = 16


def random_images(count: int, seed: int) -> np.ndarray:
  """uint8 [count, IMAGE_SIZE, IMAGE_SIZE, 3]: four flat quadrants of random colours each."""
  colours = np.random.default_rng(seed).integers(0, 256, (count, 2, 2, 3), dtype=np.uint8)
  half = IMAGE_SIZE // 2
  return colours.repeat(half, axis=1).repeat(half, axis=2)


def encode(image: np.ndarray, extension: str) -> bytes:
  out = io.BytesIO()
  options = {"webp": dict(format="WEBP", lossless=True), "png": dict(format="PNG")}[extension]
  Image.fromarray(image).save(out, **options)
  return out.getvalue()


def write_task(folder: str, samples: list[dict[str, bytes]], *, classnames=None, templates=None,
               dataset_type: str = "", shard_size: int = 8) -> None:
  """`folder`/test/{0..n-1}.tar with nshards.txt, and the metadata files given."""
  os.makedirs(os.path.join(folder, "test"), exist_ok=True)
  for name, lines in (("classnames.txt", classnames),
                      ("zeroshot_classification_templates.txt", templates),
                      ("dataset_type.txt", [dataset_type] if dataset_type else None)):
    if lines is not None:
      with open(os.path.join(folder, name), "w") as file:
        file.write("\n".join(lines) + "\n")
  shards = [samples[start:start + shard_size] for start in range(0, len(samples), shard_size)]
  for number, shard in enumerate(shards):
    with tarfile.open(os.path.join(folder, "test", f"{number}.tar"), "w") as tar:
      for index, members in enumerate(shard, number * shard_size):
        for extension, data in members.items():
          info = tarfile.TarInfo(f"s{index:07d}.{extension}")
          info.size = len(data)
          tar.addfile(info, io.BytesIO(data))
  with open(os.path.join(folder, "test", "nshards.txt"), "w") as file:
    file.write(f"{len(shards)}\n")


def npy(array: np.ndarray) -> bytes:
  out = io.BytesIO()
  np.save(out, array, allow_pickle=False)
  return out.getvalue()


def classification_samples(images: np.ndarray, labels: np.ndarray, metadata=None,
                           extension: str = "webp") -> list[dict[str, bytes]]:
  samples = []
  for index, (image, label) in enumerate(zip(images, labels)):
    sample = {extension: encode(image, extension), "cls": str(int(label)).encode()}
    if metadata is not None:
      sample["npy"] = npy(metadata[index])
    samples.append(sample)
  return samples


def retrieval_samples(images: np.ndarray, captions: list[list[str]]) -> list[dict[str, bytes]]:
  return [{"png": encode(image, "png"), "txt": "\n".join(texts).encode()}
          for image, texts in zip(images, captions)]
