"""The training input pipeline on WebDataset shards of photograph-like JPEGs, side by side in one
run: the reading stage alone (records/s), the whole pipeline (read, decode, augment, tokenize,
batch; samples/s) at each of `--cores`, the same with `data.exact_resize=True` (PIL's pixels, the
work open_clip does), optionally the code of another checkout (`--before`) and open_clip's own
training data pipeline (`open_clip_train.data.get_wds_dataset`) on the same shards.

  python -m benchmarks.input_pipeline --before=/path/to/base/checkout --no_open_clip
  python -m benchmarks.input_pipeline --open_clip_python=/path/to/venv/bin/python
  python -m benchmarks.input_pipeline --num_images=300 --batch_size=64 --batches=4 --no_record

Every measurement runs in its own process pinned to the first N CPUs of this process
(sched_setaffinity before TensorFlow or torch is imported, so both size their thread pools to
them): ours with TensorFlow's pools of N threads, open_clip with a torch DataLoader of N workers.
After `--warmup_batches`, `--batches` batches are timed. The machine's load (1-minute average) is
printed before and after each measurement: on a shared machine compare ratios within one run.
The headline ratio against open_clip is the exact-resize row's, the same work on both sides.
open_clip's side runs under `--open_clip_python` (default: this interpreter), an environment with
torch, torchvision, open_clip_torch and its training extra (`open_clip_torch[training]`: pandas and
webdataset<=0.2.86; open_clip_train 3.3.0 fails on webdataset 1.x's end-of-shard markers).

This file is also each side's entry point (`--side`), so it imports only the standard library at
the top: the open_clip environment need not have TensorFlow or clip_jax, and `--before` runs its
reading side against the other checkout's code.
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


def _limit_tensorflow_threads(cores: int) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # tf.data runs its work on the inter-op pool unless given a private one; size it to the cores
  # before anything starts TensorFlow's runtime.
  tf.config.threading.set_inter_op_parallelism_threads(cores)
  tf.config.threading.set_intra_op_parallelism_threads(cores)


def _data_settings(args, **changes):
  from clip_jax import settings  # pylint: disable=g-import-not-at-top
  return settings.data_settings(name="webdataset", files=args.files, image_size=224,
                                context_length=77, tokenizer="clip_bpe", seed=0, **changes)


def measure_ours(args) -> dict:
  """clip_jax's pipeline: input_pipeline.create_dataset with the webdataset source."""
  _limit_tensorflow_threads(args.cores)
  import input_pipeline  # pylint: disable=g-import-not-at-top
  changes = {"exact_resize": True} if args.exact_resize else {}
  iterator = input_pipeline.create_dataset(_data_settings(args, **changes),
                                           global_batch_size=args.batch_size)

  def next_batch():
    batch = next(iterator)
    assert batch["image"].shape == (args.batch_size, 224, 224, 3), batch["image"].shape
    assert batch["text"].shape == (args.batch_size, 77), batch["text"].shape

  return time_batches(next_batch, args.batch_size, args.warmup_batches, args.batches)


def measure_reading(args) -> dict:
  """The reading stage alone, records/s: the stream in Python ("stream", the serial reader of
  every version), and, where the code has it, `input_pipeline.read_records`, the stage as the
  pipeline runs it in tf.data ("tf.data")."""
  _limit_tensorflow_threads(args.cores)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import input_pipeline  # pylint: disable=g-import-not-at-top
  from input_pipeline import sources  # pylint: disable=g-import-not-at-top
  stream = sources.create_stream(_data_settings(args), process_index=0, process_count=1)
  records = args.reading_records
  warmup = max(1, records // 5)
  iterator = stream.iterate()
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  for _ in range(records):
    next(iterator)
  result = {"stream": records / (time.perf_counter() - start)}
  if hasattr(input_pipeline, "read_records"):
    # Only the record counts come back to Python, as the pipeline's images stay in tf.data.
    counts = input_pipeline.read_records(
        stream, {"samples": 0, "records": 0, "position": None}).map(
            lambda chunk: tf.size(chunk["record_number"])).prefetch(2).as_numpy_iterator()
    counted = 0
    while counted < warmup:
      counted += next(counts)
    counted, start = 0, time.perf_counter()
    while counted < records:
      counted += next(counts)
    result["tf.data"] = counted / (time.perf_counter() - start)
  return result


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


def side_flags(args, files: str, cores: int | None = None) -> list[str]:
  """The flags of one side at `cores` (default: the single count of `args.cores`)."""
  cores = cores if cores is not None else args.cores
  return [f"--files={files}", f"--cores={cores}", f"--batch_size={args.batch_size}",
          f"--warmup_batches={args.warmup_batches}", f"--batches={args.batches}"]


def run_side(side: str, python: str, flags: list[str],
             module: str = "benchmarks.input_pipeline",
             root: str = REPO_ROOT) -> tuple[dict | None, str]:
  """Runs one side of the benchmark `module` (or script file) in a fresh process with the code
  of the checkout `root`: (its figures, or None and why). The side prints its figures as JSON on
  its last line after RESULT_PREFIX."""
  # A script runs with -P: its own folder first on sys.path would shadow the package.
  command = [python, *(["-P", module] if module.endswith(".py") else ["-m", module]),
             f"--side={side}", *flags]
  env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2",
         "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
  print(f"Running {side} ({root}): {' '.join(command)}", flush=True)
  done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
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


# reading: the shards' records alone; pipeline: decode, crop, tokenise, batch; exact: the same
# with exact_resize=True (open_clip's work).
STAGES = ("reading", "pipeline", "exact")


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cores", default="1,2",
                      help="Comma-separated CPU counts to pin each measurement to.")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--warmup_batches", type=int, default=3)
  parser.add_argument("--batches", type=int, default=10, help="Batches timed after warm-up.")
  parser.add_argument("--reading_records", type=int, default=20_000,
                      help="Records timed in the reading stage (after a fifth as many).")
  parser.add_argument("--num_images", type=int, default=2000)
  parser.add_argument("--samples_per_shard", type=int, default=100)
  parser.add_argument("--seed", type=int, default=0, help="Of the generated images and captions.")
  parser.add_argument("--data_dir", default=None,
                      help="Where to write (or reuse) the shards; default: a temporary directory.")
  parser.add_argument("--before", default=None,
                      help="A checkout of the code to compare with (e.g. a git worktree of the "
                      "base commit): its reading stage and whole pipeline are measured too.")
  parser.add_argument("--open_clip_python", default=sys.executable,
                      help="Python of an environment with open_clip_torch, torch and webdataset.")
  parser.add_argument("--no_open_clip", action="store_true", help="Skip the open_clip reference.")
  parser.add_argument("--no_record", action="store_true", help="Do not append to RESULTS.md.")
  parser.add_argument("--notes", default="", help="Appended below the table in RESULTS.md.")
  parser.add_argument("--stages", default=",".join(STAGES),
                      help=f"Comma-separated stages to measure, of {', '.join(STAGES)}.")
  parser.add_argument("--json", default="",
                      help="Also write the figures to this JSON file, keyed 'stage code cores' "
                      "(e.g. 'pipeline this 2'; clip_jax.doctor reads them).")
  parser.add_argument("--side", choices=("ours", "reading", "open_clip"), help=argparse.SUPPRESS)
  parser.add_argument("--exact_resize", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--files", help=argparse.SUPPRESS)
  args = parser.parse_args()
  try:
    args.cores = [int(count) for count in str(args.cores).split(",")]
  except ValueError:
    parser.error(f"--cores={args.cores}: need comma-separated integers, e.g. 1,2.")
  if args.side and len(args.cores) == 1:
    args.cores = args.cores[0]
  for name in ("batch_size", "batches", "num_images", "samples_per_shard", "reading_records"):
    if getattr(args, name) < 1:
      parser.error(f"--{name}={getattr(args, name)}: need >= 1.")
  if not args.side and min(args.cores) < 1:
    parser.error(f"--cores={args.cores}: need counts >= 1.")
  args.stages = args.stages.split(",")
  if unknown := set(args.stages) - set(STAGES):
    parser.error(f"--stages: {', '.join(sorted(unknown))}; allowed: {', '.join(STAGES)}.")
  return args


def load() -> str:
  """The machine's 1-minute load average, for the printed record of a shared machine."""
  return f"{os.getloadavg()[0]:.2f}"


def main():
  args = parse_args()
  if args.side:  # One side, in its own pinned process: report the figures to the driver.
    pin_to_cores(args.cores)
    measure = {"ours": measure_ours, "reading": measure_reading,
               "open_clip": measure_open_clip}[args.side]
    print(RESULT_PREFIX + json.dumps(measure(args)), flush=True)
    return
  if -(-args.num_images // args.samples_per_shard) < max(args.cores):
    raise ValueError(f"--num_images={args.num_images} in shards of --samples_per_shard="
                     f"{args.samples_per_shard} give fewer shards than --cores={max(args.cores)}; "
                     "open_clip needs a shard per worker.")
  available = len(os.sched_getaffinity(0))
  if max(args.cores) > available:
    raise ValueError(f"--cores={max(args.cores)}: only {available} CPUs are available.")
  codes = {"this": REPO_ROOT, **({"before": os.path.abspath(args.before)} if args.before else {})}
  this_file = os.path.abspath(__file__)
  figures, loads, notes = {}, [], []

  def measure(key, side, root, flags, module="benchmarks.input_pipeline"):
    before_load = load()
    figures[key], error = run_side(side, sys.executable, flags, module, root)
    loads.append(f"{before_load}-{load()}")
    if error:
      print(error)
      notes.append(f"{' '.join(map(str, key))} failed.")

  with tempfile.TemporaryDirectory() as temporary:
    files = generate_shards(args.data_dir or temporary, args.num_images, args.samples_per_shard,
                            args.seed)
    reading_flags = [f"--reading_records={args.reading_records}"]
    for cores in args.cores:
      for code, root in codes.items():
        if "reading" in args.stages:  # The reading side is this file's, run on each checkout.
          measure(("reading", code, cores), "reading", root,
                  side_flags(args, files, cores) + reading_flags, this_file)
        if "pipeline" in args.stages:
          measure(("pipeline", code, cores), "ours", root, side_flags(args, files, cores))
      if "exact" in args.stages:
        measure(("exact", "this", cores), "ours", REPO_ROOT,
                side_flags(args, files, cores) + ["--exact_resize"])
    why_not = "--no_open_clip" if args.no_open_clip else open_clip_missing(args.open_clip_python)
    if why_not:
      print(f"open_clip's pipeline not measured: {why_not}")
      notes.append(f"open_clip not measured: {why_not}.")
    else:
      for cores in args.cores:
        before_load = load()
        figures[("open_clip", "open_clip", cores)], error = run_side(
            "open_clip", args.open_clip_python, side_flags(args, files, cores))
        loads.append(f"{before_load}-{load()}")
        if error:
          print(error)
          notes.append("open_clip's pipeline failed.")
  notes = " ".join(notes + [
      f"{args.num_images} generated photo-like JPEGs (300-700 px a side, quality "
      "90) with LAION-length captions, in WebDataset shards of "
      f"{args.samples_per_shard}. Reading: records/s of the shards' records "
      "(image bytes and captions) in stream order, in Python alone and as the "
      "pipeline hands them to tf.data. Pipeline: decode, random-resized-crop to "
      "224, tokenise to 77 and batch; clip_jax's default resize (libjpeg draft "
      "scale, bicubic without antialiasing), then exact_resize=True (PIL's "
      "pixels, open_clip's work: the like-for-like row). open_clip: "
      "get_wds_dataset with a DataLoader of one worker per core, float32 "
      "standardised batches. Each measurement in its own process pinned to the "
      f"first N CPUs; {args.warmup_batches} warm-up batches, then "
      f"{args.batches} timed. 1-minute load before-after each measurement, in "
      f"order: {', '.join(loads)}.", args.notes]).strip()
  common.report("Input pipeline", *table(args, figures), notes, record=not args.no_record)
  print(notes)
  if args.json:
    with open(args.json, "w") as file:
      json.dump({" ".join(map(str, key)): value for key, value in figures.items()}, file)


def table(args, figures: dict) -> tuple[list[str], list[list[str]]]:
  """The printed table: one row per stage, code and core count, with the ratios of one run."""
  header = ["stage", "code", "cores", "per s", "per s per core", "vs 1st cores", "vs before",
            "vs open_clip"]
  # (stage, the figure of its side's result) -> label
  stages = {("reading", "stream"): "reading: stream in Python",
            ("reading", "tf.data"): "reading: into tf.data",
            ("pipeline", "samples_per_s"): "pipeline",
            ("exact", "samples_per_s"): "pipeline, exact_resize",
            ("open_clip", "samples_per_s"): "open_clip"}

  def value(stage, part, code, cores):
    return (figures.get((stage, code, cores)) or {}).get(part)

  def ratio(numerator, denominator):
    return "-" if numerator is None or denominator is None else f"{numerator / denominator:.2f}x"

  rows = []
  for (stage, part), label in stages.items():
    for code in ("this", "before", "open_clip"):
      for cores in args.cores:
        here = value(stage, part, code, cores)
        if here is None:
          continue
        # Like for like: open_clip decodes fully and resizes with antialiasing, as exact_resize.
        theirs = value("open_clip", part, "open_clip", cores) if stage == "exact" else None
        name = f"open_clip {figures[(stage, code, cores)].get('version', '')}" if (
            stage == "open_clip") else code
        rows.append([label, name, cores, f"{here:.0f}", f"{here / cores:.0f}",
                     ratio(here, value(stage, part, code, args.cores[0])),
                     ratio(here, value(stage, part, "before", cores)) if code == "this" else "-",
                     ratio(here, theirs)])
  return header, rows


if __name__ == "__main__":
  main()
