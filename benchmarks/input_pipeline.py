"""Samples/s per CPU core of the full training input pipeline (read, decode, augment, tokenize,
batch) on WebDataset shards of photograph-like JPEGs, and of open_clip's own training data pipeline
(`open_clip_train.data.get_wds_dataset`) on the same shards in the same run, with the ratio.

  python -m benchmarks.input_pipeline --open_clip_python=/path/to/venv/bin/python
  python -m benchmarks.input_pipeline --num_images=300 --batch_size=64 --batches=4 --no_record

Each side runs in its own process pinned to the same `--cores` CPUs (sched_setaffinity before
TensorFlow or torch is imported, so both size their thread pools to them): ours with tf.data's
threads limited to that many, open_clip with a torch DataLoader of that many workers. After
`--warmup_batches`, `--batches` batches are timed. open_clip's side runs under
`--open_clip_python` (default: this interpreter), an environment with torch, torchvision,
open_clip_torch and its training extra (`open_clip_torch[training]`: pandas and
webdataset<=0.2.86; open_clip_train 3.3.0 fails on webdataset 1.x's end-of-shard markers).

This file is also each side's entry point (`--side`), so it imports only the standard library at
the top: the open_clip environment need not have TensorFlow or clip_jax.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import common

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_PREFIX = "RESULT "  # A side's last stdout line: this, then its figures as JSON.

# Caption words: common words of alt-texts, plus made-up words from syllables for LAION's long
# tail of names and products (which keeps BPE caches from doing all the work).
COMMON_WORDS = (
    "a the of and with in on for to by at from black white red blue green new old vintage "
    "photo image picture stock illustration vector design art print poster canvas wall home "
    "kitchen garden house room table chair sofa bed lamp woman man girl boy child family dog "
    "cat bird horse flower tree forest mountain beach sea lake river sky sunset city street car "
    "bike shoes dress shirt jacket bag watch ring necklace gold silver wood metal glass cotton "
    "leather size small large mini set pack free shipping sale best quality modern classic "
    "beautiful cute happy summer winter spring autumn christmas wedding birthday party 2019 "
    "2020 2021 hd 4k logo icon pattern background texture abstract portrait view close up").split()
SYLLABLES = ("ka ro mi ta ne lu so vi pe da zu ko ri ba me no sa ti gu fe lo xa ve qui"
             ).split()


def caption(rng) -> str:
  """About LAION's caption lengths: ~11 words on average, a long tail to ~60."""
  num_words = int(min(60, max(1, rng.lognormal(2.2, 0.6))))
  words = []
  for _ in range(num_words):
    if rng.random() < 0.25:
      word = "".join(rng.choice(SYLLABLES, rng.integers(2, 5)))
      words.append(word.capitalize() if rng.random() < 0.5 else word)
    else:
      words.append(str(rng.choice(COMMON_WORDS)))
  return " ".join(words)


def photo_like_jpeg(rng, quality: int = 90) -> bytes:
  """A JPEG that decodes like a photograph: smooth colour fields, edges and fine grain.

  Decode time follows the image's size and its high-frequency content, so both are set to look
  like web photos: 300-700 px a side, about 0.25 bytes per pixel at quality 90 (as web JPEGs).
  """
  import io  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image, ImageDraw, ImageFilter  # pylint: disable=g-import-not-at-top
  width, height = (int(side) for side in rng.integers(300, 701, size=2))
  coarse = rng.integers(0, 256, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3), np.uint8)
  image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
  draw = ImageDraw.Draw(image)
  for _ in range(int(rng.integers(4, 14))):
    box = sorted(rng.integers(0, width, 2).tolist()), sorted(rng.integers(0, height, 2).tolist())
    xy = [box[0][0], box[1][0], box[0][1], box[1][1]]
    fill = tuple(int(value) for value in rng.integers(0, 256, 3))
    shape = rng.integers(3)
    if shape == 0:
      draw.ellipse(xy, fill=fill)
    elif shape == 1:
      draw.rectangle(xy, fill=fill)
    else:
      draw.line(xy, fill=fill, width=int(rng.integers(1, 8)))
  image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.0))))  # Soft edges.
  # Texture (foliage, fabric, ...) in brightness: a field of 2-8 px blobs; then sensor grain.
  cell = int(rng.integers(2, 9))
  rows, columns = height // cell + 2, width // cell + 2
  texture = Image.fromarray(rng.normal(0.0, rng.uniform(8.0, 20.0), (rows, columns)).astype(
      np.float32), "F").resize((columns * cell, rows * cell), Image.BICUBIC)
  texture = np.asarray(texture)[:height, :width, None]
  grain = rng.normal(0.0, rng.uniform(2.0, 5.0), (height, width, 3))
  pixels = np.asarray(image, np.float32) + texture + grain
  buffer = io.BytesIO()
  Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
  return buffer.getvalue()


def generate_shards(data_dir: str, num_images: int, samples_per_shard: int, seed: int) -> str:
  """Writes the shards (once per directory) and returns their brace pattern."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from input_pipeline import write_shards  # pylint: disable=g-import-not-at-top
  num_shards = -(-num_images // samples_per_shard)
  pattern = write_shards.shard_pattern(data_dir, num_shards)
  done = os.path.join(data_dir, f"DONE-{num_images}-{samples_per_shard}-{seed}")
  if os.path.exists(done):
    return pattern
  rng = np.random.default_rng(seed)

  def samples():
    for _ in range(num_images):
      yield write_shards.Sample(photo_like_jpeg(rng), "jpg", caption(rng))

  start = time.perf_counter()
  paths = write_shards.write_shards(samples(), data_dir, samples_per_shard)
  megabytes = sum(os.path.getsize(path) for path in paths) / 1e6
  print(f"Wrote {num_images} JPEGs ({megabytes:.0f} MB) in {len(paths)} shards to {data_dir} in "
        f"{time.perf_counter() - start:.0f} s", flush=True)
  open(done, "w").close()
  return pattern


def pin_to_cores(cores: int) -> list[int]:
  """Restricts this process (and its future threads and children) to its first `cores` CPUs."""
  allowed = sorted(os.sched_getaffinity(0))
  if cores > len(allowed):
    raise ValueError(f"--cores={cores}: only {len(allowed)} CPUs are available to this process.")
  os.sched_setaffinity(0, allowed[:cores])
  return allowed[:cores]


def time_batches(next_batch, batch_size: int, warmup_batches: int, batches: int) -> dict:
  for _ in range(warmup_batches):
    next_batch()
  start = time.perf_counter()
  for _ in range(batches):
    next_batch()
  seconds = time.perf_counter() - start
  return {"samples_per_s": batches * batch_size / seconds, "seconds": seconds}


def measure_ours(args) -> dict:
  """clip_jax's pipeline: input_pipeline.create_dataset with the webdataset source."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # tf.data runs its work on the inter-op pool unless given a private one; size it to the cores
  # before anything starts TensorFlow's runtime.
  tf.config.threading.set_inter_op_parallelism_threads(args.cores)
  tf.config.threading.set_intra_op_parallelism_threads(args.cores)
  import input_pipeline  # pylint: disable=g-import-not-at-top
  from clip_jax import settings  # pylint: disable=g-import-not-at-top
  data = settings.Data(name="webdataset", files=args.files, image_size=224, context_length=77,
                       tokenizer="clip_bpe", seed=0)
  iterator = input_pipeline.create_dataset(data, global_batch_size=args.batch_size)

  def next_batch():
    batch = next(iterator)
    assert batch["image"].shape == (args.batch_size, 224, 224, 3), batch["image"].shape
    assert batch["text"].shape == (args.batch_size, 77), batch["text"].shape

  return time_batches(next_batch, args.batch_size, args.warmup_batches, args.batches)


def measure_open_clip(args) -> dict:
  """open_clip_train's WebDataset loader, as its training script builds it for ViT-B-32."""
  import open_clip  # pylint: disable=g-import-not-at-top
  from open_clip_train import data as open_clip_data  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.cores)
  # The training script's arguments that get_wds_dataset reads. A sample count far beyond the
  # shards makes each worker cycle over its shards within one epoch: steady state, no restarts.
  loader_args = argparse.Namespace(
      train_data=args.files, val_data=None, dataset_resampled=False, train_num_samples=10**9,
      train_data_upsampling_factors=None, seed=0, batch_size=args.batch_size, workers=args.cores,
      world_size=1)
  preprocess = open_clip.image_transform(224, is_train=True)  # ViT-B-32's training transform.
  tokenizer = open_clip.get_tokenizer("ViT-B-32")
  data = open_clip_data.get_wds_dataset(loader_args, preprocess, is_train=True,
                                        tokenizer=tokenizer)
  batches = iter(data.dataloader)

  def next_batch():
    images, texts = next(batches)
    assert tuple(images.shape) == (args.batch_size, 3, 224, 224), images.shape
    assert tuple(texts.shape) == (args.batch_size, 77), texts.shape

  return {**time_batches(next_batch, args.batch_size, args.warmup_batches, args.batches),
          "version": open_clip.__version__}


def side_flags(args, files: str) -> list[str]:
  return [f"--files={files}", f"--cores={args.cores}", f"--batch_size={args.batch_size}",
          f"--warmup_batches={args.warmup_batches}", f"--batches={args.batches}"]


def run_side(side: str, python: str, flags: list[str],
             module: str = "benchmarks.input_pipeline") -> tuple[dict | None, str]:
  """Runs one side of the benchmark `module` in a fresh process: (its figures, or None and
  why). The side prints its figures as JSON on its last line after RESULT_PREFIX."""
  command = [python, "-m", module, f"--side={side}", *flags]
  env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2",
         "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")]))}
  print(f"Running {side}: {' '.join(command)}", flush=True)
  done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                        check=False)
  lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
  if done.returncode or not lines:
    return None, f"{side} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
  return json.loads(lines[-1][len(RESULT_PREFIX):]), ""


def open_clip_missing(python: str,
                      imports: str = "import open_clip, open_clip_train.data, torch, webdataset"
                      ) -> str:
  """Why open_clip's side cannot run under `python` (`imports` fail), or "" if it can."""
  if not os.path.exists(python):
    return f"{python} does not exist"
  probe = subprocess.run([python, "-c", imports], capture_output=True, text=True, check=False)
  if probe.returncode:
    return f"{python} cannot import it: {probe.stderr.strip().splitlines()[-1]}"
  return ""


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cores", type=int, default=1, help="CPUs each side is pinned to.")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--warmup_batches", type=int, default=3)
  parser.add_argument("--batches", type=int, default=10, help="Batches timed after warm-up.")
  parser.add_argument("--num_images", type=int, default=2000)
  parser.add_argument("--samples_per_shard", type=int, default=100)
  parser.add_argument("--seed", type=int, default=0, help="Of the generated images and captions.")
  parser.add_argument("--data_dir", default=None,
                      help="Where to write (or reuse) the shards; default: a temporary directory.")
  parser.add_argument("--open_clip_python", default=sys.executable,
                      help="Python of an environment with open_clip_torch, torch and webdataset.")
  parser.add_argument("--no_open_clip", action="store_true", help="Skip the open_clip reference.")
  parser.add_argument("--no_record", action="store_true", help="Do not append to RESULTS.md.")
  parser.add_argument("--notes", default="", help="Appended below the table in RESULTS.md.")
  parser.add_argument("--json", default="",
                      help="Also write each side's figures, by side, to this JSON file "
                      "(clip_jax.doctor reads them).")
  parser.add_argument("--side", choices=("ours", "open_clip"), help=argparse.SUPPRESS)
  parser.add_argument("--files", help=argparse.SUPPRESS)
  args = parser.parse_args()
  for name in ("cores", "batch_size", "batches", "num_images", "samples_per_shard"):
    if getattr(args, name) < 1:
      parser.error(f"--{name}={getattr(args, name)}: need >= 1.")
  return args


def main():
  args = parse_args()
  if args.side:  # One side, in its own pinned process: report the figures to the driver.
    pin_to_cores(args.cores)
    measure = measure_ours if args.side == "ours" else measure_open_clip
    print(RESULT_PREFIX + json.dumps(measure(args)), flush=True)
    return
  if -(-args.num_images // args.samples_per_shard) < args.cores:
    raise ValueError(f"--num_images={args.num_images} in shards of --samples_per_shard="
                     f"{args.samples_per_shard} give fewer shards than --cores={args.cores}; "
                     "open_clip needs a shard per worker.")
  with tempfile.TemporaryDirectory() as temporary:
    files = generate_shards(args.data_dir or temporary, args.num_images, args.samples_per_shard,
                            args.seed)
    results, notes = {}, []
    why_not = "--no_open_clip" if args.no_open_clip else open_clip_missing(args.open_clip_python)
    if why_not:
      print(f"open_clip's pipeline not measured: {why_not}")
      notes.append(f"open_clip not measured: {why_not}.")
    else:
      results["open_clip"], error = run_side("open_clip", args.open_clip_python, side_flags(args, files))
      if error:
        print(error)
        notes.append("open_clip's pipeline failed.")
    results["clip_jax"], error = run_side("ours", sys.executable, side_flags(args, files))
    if error:
      raise RuntimeError(error)
  reference = results.get("open_clip")
  header = ["pipeline", "cores", "batch", "samples/s", "samples/s per core", "vs open_clip"]
  rows = []
  for name, result in results.items():
    if result is None:
      continue
    label = f"open_clip {result['version']}" if name == "open_clip" else name
    ratio = "-" if reference is None else (
        f"{result['samples_per_s'] / reference['samples_per_s']:.2f}x")
    rows.append([label, args.cores, args.batch_size, f"{result['samples_per_s']:.1f}",
                 f"{result['samples_per_s'] / args.cores:.1f}", ratio])
  common.report(
      "Input pipeline", header, rows,
      " ".join(notes + [
          f"{args.num_images} generated photo-like JPEGs (300-700 px a side, quality 90) with "
          "LAION-length captions, in WebDataset shards; both sides read the same shards, "
          "decode, random-resized-crop to 224, tokenise to 77 and batch, each "
          f"pinned to {args.cores} core(s) (open_clip: get_wds_dataset, DataLoader with "
          f"{args.cores} worker(s)). open_clip standardises the pixels on the host (float32 "
          "batches); clip_jax hands uint8 pixels to the device, which standardises them. "
          "clip_jax's default training resize (libjpeg draft scale, bicubic without "
          "antialiasing) is timed; data.exact_resize=True (PIL's pixels) is about half as fast. "
          f"{args.warmup_batches} warm-up batches, then {args.batches} timed.",
          args.notes]).strip(), record=not args.no_record)
  if args.json:
    with open(args.json, "w") as file:
      json.dump(results, file)


if __name__ == "__main__":
  main()
