"""The benchmark suite's command on a converted model: `python -m clip_jax.evaluate --model=...
--suite=... --data_dir=...` on made-up tasks in DataComp's layout, one of each kind of metric
(classification, retrieval, WILDS worst group and macro F1, Dollar Street's top-5 worst group),
killed after its first task and resumed; seconds and images/s per task.

  python -m benchmarks.suite --images_per_task=64
  python -m benchmarks.suite --images_per_task=16 --model=tiny-vit --no_record

The model is `--model` with random weights, written in open_clip's layout and converted by
`python -m clip_jax.convert`, as a user converts open_clip's weights. The images are
photograph-like JPEGs of 300-700 px a side; each command's time includes its start-up and
compilation. The second task's shard is a pipe, so that the first run is killed while on it.
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
from benchmarks import input_pipeline as pipeline_benchmark

TASKS = ("cifar10", "retrieval/mscoco_2014_5k_test_image_text_retrieval", "wilds/iwildcam",
         "wilds/fmow", "fairness/dollar_street")
# The suite's second task, in the table's order: its shard is the pipe.
PIPE_TASK_FOLDER = "wds_mscoco_captions"


def write_tasks(root: str, count: int) -> None:
  """The tasks' data: 10 classes with DataComp's metadata columns where the task has them."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from clip_jax.evaluation import benchmark_data  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  images = [pipeline_benchmark.photo_like_jpeg(rng) for _ in range(count)]
  labels = rng.integers(0, 10, count)
  names = [f"object {index}" for index in range(10)]
  for folder in ("wds_cifar10_test", "wds_wilds-iwildcam_test", "wds_wilds-fmow_test",
                 "wds_dollar_street_test"):
    metadata = np.stack([rng.integers(0, 5, count), rng.integers(0, 4, count), labels], axis=1)
    samples = [{"jpg": image, "cls": str(label).encode(), "npy": benchmark_data.npy_bytes(row)}
               for image, label, row in zip(images, labels, metadata)]
    benchmark_data.write_task(os.path.join(root, folder), samples, classnames=names,
                              templates=["a photo of a {c}.", "a picture of the {c}."])
  benchmark_data.write_task(os.path.join(root, PIPE_TASK_FOLDER), [
      {"jpg": image, "txt": f"a photo of object {label}\nobject {label}, seen".encode()}
      for image, label in zip(images, labels)], dataset_type="retrieval")


def convert_random_model(folder: str, model_name: str) -> str:
  """A checkpoint converted by `python -m clip_jax.convert` from random weights in open_clip's
  layout."""
  import jax  # pylint: disable=g-import-not-at-top
  from clip_jax import convert  # pylint: disable=g-import-not-at-top
  from clip_jax import models  # pylint: disable=g-import-not-at-top
  from clip_jax.models import clip as clip_model  # pylint: disable=g-import-not-at-top
  config = models.get_model_config(model_name, text=dict(vocab_size=49_408))
  variables = clip_model.init_variables(config, jax.random.PRNGKey(0))
  convert.export_weights(config, variables, os.path.join(folder, "open_clip"), "open_clip")
  checkpoint = os.path.join(folder, "converted")
  subprocess.run([sys.executable, "-m", "clip_jax.convert",
                  f"--src={os.path.join(folder, 'open_clip', convert.OPEN_CLIP_WEIGHTS)}",
                  f"--dst={checkpoint}"], check=True, capture_output=True)
  return checkpoint


def main() -> None:
  """Parses the flags; the run's files live in a temporary folder."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
  parser.add_argument("--images_per_task", type=int, default=64)
  parser.add_argument("--model", default="ViT-B-32")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--no_record", action="store_true")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory(prefix="clip_jax_suite_benchmark.") as folder:
    run(args, folder)


def run(args: argparse.Namespace, folder: str) -> None:
  """Writes the tasks and the model under `folder`, runs the command twice and reports."""
  root = os.path.join(folder, "evalsets")
  write_tasks(root, args.images_per_task)
  checkpoint = convert_random_model(folder, args.model)
  pipe = os.path.join(root, PIPE_TASK_FOLDER, "test", "0.tar")
  with open(pipe, "rb") as file:
    shard = file.read()
  os.remove(pipe)
  os.mkfifo(pipe)
  command = [sys.executable, "-m", "clip_jax.evaluate", f"--model={checkpoint}",
             f"--suite={','.join(TASKS)}", f"--data_dir={root}",
             f"--batch_size={args.batch_size}"]
  output = os.path.join(checkpoint, "benchmark.json")
  start = time.perf_counter()
  with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as first:
    while not (os.path.exists(output) and json.loads(open(output).read())["tasks"]):  # pylint: disable=consider-using-with
      if first.poll() is not None:
        raise RuntimeError("the first run ended before it was killed")
      time.sleep(0.2)
    first.kill()
  killed_after = time.perf_counter() - start
  killed = json.loads(open(output).read())  # pylint: disable=consider-using-with
  os.remove(pipe)
  with open(pipe, "wb") as file:
    file.write(shard)
  start = time.perf_counter()
  resumed = subprocess.run(command, capture_output=True, text=True, check=True)
  resumed_seconds = time.perf_counter() - start
  results = json.loads(open(output).read())  # pylint: disable=consider-using-with
  assert results["tasks"][TASKS[0]] == killed["tasks"][TASKS[0]], "the first task ran again"
  rows = []
  for key in TASKS:
    entry = results["tasks"][key]
    run = "killed run" if key in killed["tasks"] else "resumed run"
    rows.append([key, run, entry["images"], f"{entry['seconds']:.1f}",
                 f"{entry['images'] / entry['seconds']:.1f}",
                 f"{entry['metrics']['main_metric']:.4f}"])
  with open(output.removesuffix(".json") + ".csv") as file:
    table = file.read()
  notes = (f"{args.model} with random weights, converted from open_clip's layout. The first run "
           f"was killed {killed_after:.0f} s after it started (start-up, compilation and the "
           f"first task), on the second task's shard; the resumed run took "
           f"{resumed_seconds:.0f} s and kept the first task's results. Its benchmark.csv:"
           f"\n\n```text\n{table}```")
  assert "done before, kept" in resumed.stderr
  common.report(f"Benchmark suite command ({args.model}, {args.images_per_task} images a task)",
                ["task", "run", "images", "seconds", "images/s", "main metric"], rows, notes,
                record=not args.no_record)
  print(notes)


if __name__ == "__main__":
  main()
