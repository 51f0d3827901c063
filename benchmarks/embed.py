"""Images/s of clip_jax's embedding path (`clip_jax.embed`: tf.data decoding and the checkpoint's
evaluation view, uint8 to the devices, the image tower) against open_clip's `encode_image` with
its own preprocessing (`image_transform(224, is_train=False)`) and a torch DataLoader, in the same
run, on the same photograph-like JPEGs: ViT-B/32 at 224 px with random weights by default.

  python -m benchmarks.embed --open_clip_python=/path/to/venv/bin/python
  python -m benchmarks.embed --num_images=64 --batch_size=16 --no_open_clip --no_record

Each side runs in its own process pinned to the same `--cores` CPUs (before TensorFlow, JAX or
torch start their thread pools); the first batch (compilation, warm-up) is not timed. open_clip's
side runs under `--open_clip_python`, an environment with torch, torchvision and open_clip_torch.
This file is each side's entry point (`--side`), importing only the standard library at the top.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

from benchmarks import common
from benchmarks import input_pipeline as pipeline_benchmark


def write_images(folder: str, num_images: int, seed: int) -> list[str]:
  """Photograph-like JPEGs of 300-700 px a side (once per folder and count)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  os.makedirs(folder, exist_ok=True)
  paths = [os.path.join(folder, f"{index:06d}.jpg") for index in range(num_images)]
  rng = np.random.default_rng(seed)
  for path in paths:
    data = pipeline_benchmark.photo_like_jpeg(rng)
    if not os.path.exists(path):
      with open(path, "wb") as file:
        file.write(data)
  return paths


def time_after_first(batches, count) -> dict:
  """Images/s over every batch after the first (which compiles and warms up)."""
  iterator = iter(batches)
  count(next(iterator))
  start, images = time.perf_counter(), 0
  for batch in iterator:
    images += count(batch)
  seconds = time.perf_counter() - start
  return {"images_per_s": images / seconds, "images": images, "seconds": seconds}


def measure_ours(args, paths: list[str]) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_inter_op_parallelism_threads(args.cores)
  tf.config.threading.set_intra_op_parallelism_threads(args.cores)
  import tempfile  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from clip_jax import embeddings  # pylint: disable=g-import-not-at-top
  from clip_jax import pretrained  # pylint: disable=g-import-not-at-top
  from clip_jax.models import clip as clip_model  # pylint: disable=g-import-not-at-top
  from clip_jax.models import configs  # pylint: disable=g-import-not-at-top
  from input_pipeline import image_collections  # pylint: disable=g-import-not-at-top
  architecture = configs.get_model_config(args.model)
  variables = clip_model.init_variables(architecture, jax.random.PRNGKey(0))
  checkpoint = os.path.join(tempfile.mkdtemp(), args.model)
  pretrained.save(checkpoint, architecture, jax.tree.map(np.asarray, variables))
  embedder = embeddings.Embedder(checkpoint, dtype=args.dtype, batch_size=args.batch_size)
  shard = image_collections.make_shards(paths, False, len(paths))[0]
  samples = list(image_collections.read_shard(shard))  # the files' bytes, read before timing
  views = image_collections.views(samples, embedder.image_size, embedder.view, args.batch_size)
  return time_after_first(views, lambda batch: len(embedder.encode_images(batch[1])))


def measure_open_clip(args, paths: list[str]) -> dict:
  import open_clip  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.cores)
  model = open_clip.create_model(args.model).eval()
  preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
  contents = [open(path, "rb").read() for path in paths]  # read before timing, as ours

  class Images(torch.utils.data.Dataset):
    def __len__(self):
      return len(contents)

    def __getitem__(self, index):
      import io  # pylint: disable=g-import-not-at-top
      return preprocess(Image.open(io.BytesIO(contents[index])))

  loader = torch.utils.data.DataLoader(Images(), batch_size=args.batch_size,
                                       num_workers=args.cores)

  def count(images):
    with torch.no_grad():
      return len(model.encode_image(images))

  return {**time_after_first(loader, count), "version": open_clip.__version__}


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", default="ViT-B-32", help="A named model (random weights).")
  parser.add_argument("--cores", type=int, default=1, help="CPUs each side is pinned to.")
  parser.add_argument("--num_images", type=int, default=512)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--dtype", default="bfloat16", help="Our compute dtype.")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data_dir", default=None, help="Where the JPEGs go (default: a temp dir).")
  parser.add_argument("--open_clip_python", default=sys.executable,
                      help="Python of an environment with open_clip, torch and torchvision.")
  parser.add_argument("--no_open_clip", action="store_true", help="Skip the open_clip reference.")
  parser.add_argument("--no_record", action="store_true", help="Do not append to RESULTS.md.")
  parser.add_argument("--side", choices=("ours", "open_clip"), help=argparse.SUPPRESS)
  return parser.parse_args()


def main():
  args = parse_args()
  if args.side:
    pipeline_benchmark.pin_to_cores(args.cores)
    paths = sorted(glob.glob(os.path.join(args.data_dir, "*.jpg")))[:args.num_images]
    measure = measure_ours if args.side == "ours" else measure_open_clip
    print(pipeline_benchmark.RESULT_PREFIX + json.dumps(measure(args, paths)), flush=True)
    return
  import tempfile  # pylint: disable=g-import-not-at-top
  args.data_dir = args.data_dir or tempfile.mkdtemp(prefix="embed_benchmark.")
  write_images(args.data_dir, args.num_images, args.seed)
  flags = [f"--model={args.model}", f"--cores={args.cores}", f"--num_images={args.num_images}",
           f"--batch_size={args.batch_size}", f"--dtype={args.dtype}",
           f"--data_dir={args.data_dir}"]
  ours, error = pipeline_benchmark.run_side("ours", sys.executable, flags, "benchmarks.embed")
  if ours is None:
    raise SystemExit(error)
  theirs, why = None, "skipped (--no_open_clip)"
  if not args.no_open_clip:
    why = pipeline_benchmark.open_clip_missing(args.open_clip_python,
                                               "import open_clip, torch, torchvision")
    if not why:
      theirs, why = pipeline_benchmark.run_side("open_clip", args.open_clip_python, flags,
                                                "benchmarks.embed")
  rows = [["clip_jax.embed", args.dtype, f"{ours['images_per_s']:.1f}",
           f"{ours['images_per_s'] / args.cores:.1f}", "1.00"]]
  if theirs:
    rows.append([f"open_clip {theirs['version']} encode_image", "float32",
                 f"{theirs['images_per_s']:.1f}", f"{theirs['images_per_s'] / args.cores:.1f}",
                 f"{theirs['images_per_s'] / ours['images_per_s']:.2f}"])
  notes = (f"{args.model}, random weights; {args.num_images} photograph-like JPEGs of "
           f"300-700 px, batch {args.batch_size}, both sides pinned to {args.cores} core(s); "
           "the first batch is not timed.")
  if not theirs:
    notes += f" open_clip: {why}."
  common.report("Embedding images: clip_jax.embed against open_clip",
                ["path", "dtype", "images/s", "images/s per core", "relative"], rows, notes,
                record=not args.no_record)


if __name__ == "__main__":
  main()
