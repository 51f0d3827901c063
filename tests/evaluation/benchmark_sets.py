"""Test sets in the benchmark's WebDataset layout (CLIP_benchmark's, as DataComp's download
script fetches it), made up: images of four flat quadrants, so that the evaluation view of an image
of the model's size is the image itself and a test can compute the features independently."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from clip_jax.evaluation import benchmark_data

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


def write_task(folder: str, samples: list[dict[str, bytes]], **metadata) -> None:
  """`benchmark_data.write_task` in small shards, so that tasks span several."""
  benchmark_data.write_task(folder, samples, shard_size=8, **metadata)


def classification_samples(images: np.ndarray, labels: np.ndarray, metadata=None,
                           extension: str = "webp") -> list[dict[str, bytes]]:
  samples = []
  for index, (image, label) in enumerate(zip(images, labels)):
    sample = {extension: encode(image, extension), "cls": str(int(label)).encode()}
    if metadata is not None:
      sample["npy"] = benchmark_data.npy_bytes(metadata[index])
    samples.append(sample)
  return samples


def retrieval_samples(images: np.ndarray, captions: list[list[str]]) -> list[dict[str, bytes]]:
  return [{"png": encode(image, "png"), "txt": "\n".join(texts).encode()}
          for image, texts in zip(images, captions)]


def write_hugging_face_cache(root: str, name: str, rows: list[dict], image_columns=()) -> str:
  """`datasets`' cache of nlphuji/<name>'s test split under `root`/hf_cache, as DataComp's
  download script leaves it: an Arrow stream file of `rows`, with images as `datasets` stores
  them ({"bytes", "path"}: here the bytes, but every third row's images a file by path)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  folder = os.path.join(root, "hf_cache", f"nlphuji___{name}", "TEST", "0.0.0", "0123abcd")
  os.makedirs(folder, exist_ok=True)
  stored = []
  for index, row in enumerate(rows):
    row = dict(row)
    for column in image_columns:
      def value(data, number, index=index, column=column):
        if index % 3:
          return {"bytes": data, "path": None}
        path = os.path.join(folder, f"{column}-{index}-{number}.png")
        with open(path, "wb") as file:
          file.write(data)
        return {"bytes": None, "path": path}
      images = row[column]
      row[column] = ([value(data, number) for number, data in enumerate(images)]
                     if isinstance(images, list) else value(images, 0))
    stored.append(row)
  table = pa.Table.from_pylist(stored)
  path = os.path.join(folder, f"{name}-test.arrow")
  with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
    for batch in table.to_batches(max_chunksize=5):
      writer.write_batch(batch)
  return path
