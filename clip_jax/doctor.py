"""Checks a new machine before it trains: one command, one JSON report.

  python -m clip_jax.doctor                               # writes doctor.json
  python -m clip_jax.doctor --report=h100.json --models=ViT-B-16 --per_chip_batch=256

In order, it reports:
  - the devices JAX sees, its platform, and the versions of Python, JAX and the libraries;
  - TensorFlow: whether it is installed, and that after `import input_pipeline` (which hides the
    accelerators from it) it sees none;
  - training: `--train_steps` steps of a tiny model on one random batch, which it must memorise
    (the loss falls, or the check fails);
  - speed: for each of `--models`, the step time, samples/s per chip and MFU of the paper's run
    (clip_jax.throughput) at the largest batch per chip that fits (searched: each probe compiles)
    or at `--per_chip_batch`; skipped on a CPU unless `--per_chip_batch` is given;
  - the input pipeline's samples/s on this host's cores (benchmarks/input_pipeline.py on
    generated JPEG shards), where TensorFlow and the repository's benchmarks/ are here.

Everything but the pipeline runs without TensorFlow, tensorflow_datasets and clu installed. The
exit status is 1 when a check fails; the report says which (`problems`).
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import importlib.metadata
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging
import jax
import numpy as np

from clip_jax import host_tensorflow  # pylint: disable=wrong-import-position
from clip_jax import program as program_lib
from clip_jax import settings
from clip_jax import sharding
from clip_jax import throughput

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Distributions whose versions the report lists, where installed.
DISTRIBUTIONS = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "libtpu", "flax",
                 "optax", "orbax-checkpoint", "ml-collections", "numpy", "tensorflow",
                 "tensorflow-cpu", "tensorflow-text", "tensorflow-datasets", "clu")
TRAINING_MODEL = "tiny-vit"


def machine() -> dict[str, Any]:
  """The host, JAX's platform and devices, and the installed versions."""
  devices = jax.devices()
  versions = {"python": platform.python_version()}
  for name in DISTRIBUTIONS:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return {
      "host": socket.gethostname(),
      "cpus": len(os.sched_getaffinity(0)),
      "platform": jax.default_backend(),
      "process_count": jax.process_count(),
      "devices": [{"id": device.id, "kind": device.device_kind, "platform": device.platform,
                   "process_index": device.process_index,
                   "memory_bytes": (device.memory_stats() or {}).get("bytes_limit")}
                  for device in devices],
      "versions": versions,
  }


def tensorflow_devices() -> dict[str, Any]:
  """What TensorFlow sees once input_pipeline is imported (which must hide the accelerators)."""
  try:
    importlib.import_module("input_pipeline")  # which hides the accelerators from TensorFlow
    tf = host_tensorflow.import_tensorflow()
  except ImportError as error:
    return {"installed": False, "why": str(error)}
  visible = sorted({device.device_type for device in tf.config.get_visible_devices()})
  accelerators = [kind for kind in visible if kind in host_tensorflow.ACCELERATOR_KINDS]
  return {"installed": True, "visible_devices": visible, "sees_accelerators": bool(accelerators)}


def training_run(steps: int, devices: list) -> settings.Run:
  """The tiny model at a batch of at least 32 that the devices divide, learning from step 1."""
  config = settings.default_config()
  config.model.name = TRAINING_MODEL
  config.global_batch_size = len(devices) * math.ceil(32 / len(devices))
  config.total_steps = steps
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 1
  return settings.parse(config, require_data=False)  # It trains on random batches.


def train(steps: int) -> dict[str, Any]:
  """`steps` train steps on one random batch: the first and last loss, and whether it fell."""
  run = training_run(steps, jax.devices())
  mesh = sharding.create_mesh(run.mesh)
  program = program_lib.make_program(run, mesh)
  start = time.perf_counter()
  state = jax.jit(program.init, out_shardings=program.state_shardings)(jax.random.PRNGKey(0))
  batch = sharding.global_batch(throughput.random_batch(run, np.random.default_rng(0)), mesh)
  step = program.step_function(0.0)
  losses = []
  for _ in range(steps):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  return {"model": TRAINING_MODEL, "global_batch": run.global_batch_size, "steps": steps,
          "first_loss": losses[0], "last_loss": losses[-1],
          "loss_fell": bool(np.isfinite(losses).all() and losses[-1] < 0.9 * losses[0]),
          "seconds": time.perf_counter() - start}


def speed(model: str, per_chip_batch: int, search_from: int, steps: int) -> dict[str, Any]:
  """The paper's run of `model` at `per_chip_batch` (0: the largest that fits): step time,
  samples/s per chip and MFU."""
  devices = jax.devices()
  run = throughput.paper_run(model, "plain")
  if not per_chip_batch:
    per_chip_batch = throughput.largest_per_chip_batch(run, devices, search_from)
  run = dataclasses.replace(run, global_batch_size=per_chip_batch * len(devices))
  times, _ = throughput.train_step_seconds(run, steps)
  mfu = throughput.mfu(run, times["step_s"], devices)
  return {"per_chip_batch": per_chip_batch, "compile_s": times["compile_s"],
          "step_ms": times["step_s"] * 1e3,
          "samples_per_s_per_chip": per_chip_batch / times["step_s"], "mfu": mfu,
          "settings": "bfloat16 compute, scanned blocks, no remat, AdamW, softmax loss"}


def pipeline(images: int, batches: int) -> dict[str, Any]:
  """benchmarks/input_pipeline.py's figure on all of this host's cores, without open_clip."""
  cores = len(os.sched_getaffinity(0))
  with tempfile.TemporaryDirectory() as directory:
    figures = os.path.join(directory, "figures.json")
    command = [sys.executable, "-m", "benchmarks.input_pipeline", f"--cores={cores}",
               f"--num_images={images}", f"--samples_per_shard={-(-images // cores)}",
               "--batch_size=64", "--warmup_batches=1", f"--batches={batches}",
               "--stages=pipeline", "--no_open_clip", "--no_record", f"--data_dir={directory}",
               f"--json={figures}"]
    done = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, check=False)
    if done.returncode:
      raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    with open(figures) as file:
      result = json.load(file)[f"pipeline this {cores}"]
  return {"cores": cores, "samples_per_s": result["samples_per_s"],
          "samples_per_s_per_core": result["samples_per_s"] / cores,
          "what": f"{images} generated photo-like JPEGs in WebDataset shards, decoded, cropped to "
                  "224 and tokenised (benchmarks/input_pipeline.py)"}


def pipeline_skipped(images: int, tensorflow: dict[str, Any]) -> str:
  """Why the pipeline is not measured, or "" if it is."""
  if not images:
    return "--pipeline_images=0"
  if not tensorflow.get("installed"):
    return "input_pipeline does not import (see tensorflow.why)"
  if not os.path.isdir(os.path.join(REPOSITORY, "benchmarks")):
    return f"{REPOSITORY}/benchmarks is missing (run from a clone of the repository)"
  return ""


def check(name: str, measure, problems: list[str]) -> dict[str, Any]:
  """`measure()`, printed; an exception becomes an "error" entry and one of `problems`."""
  start = time.perf_counter()
  try:
    result = measure()
  except Exception as error:  # pylint: disable=broad-except
    result = {"error": f"{type(error).__name__}: {error}"}
    problems.append(f"{name}: {result['error']}")
  print(f"{name} ({time.perf_counter() - start:.0f} s): {json.dumps(result)}", flush=True)
  return result


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:  # JAX's INFO lines about absent backends: noise here.
    logging.set_verbosity(logging.WARNING)
  problems: list[str] = []
  report: dict[str, Any] = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                            "problems": problems}
  report["machine"] = check("machine", machine, problems)
  report["tensorflow"] = check("tensorflow", tensorflow_devices, problems)
  if report["tensorflow"].get("sees_accelerators"):
    problems.append("tensorflow: it sees accelerators after `import input_pipeline`")
  report["training"] = check("training", lambda: train(_TRAIN_STEPS.value), problems)
  if not report["training"].get("loss_fell", True):
    problems.append("training: the loss did not fall below 0.9x its first value")
  report["speed"] = {}
  for model in _MODELS.value:
    if jax.default_backend() == "cpu" and not _PER_CHIP_BATCH.value:
      report["speed"][model] = {"skipped": "on a CPU; give --per_chip_batch"}
    else:
      report["speed"][model] = check(f"speed of {model}", lambda model=model: speed(
          model, _PER_CHIP_BATCH.value, _SEARCH_FROM.value, _SPEED_STEPS.value), problems)
  skip = pipeline_skipped(_PIPELINE_IMAGES.value, report["tensorflow"])
  report["input_pipeline"] = {"skipped": skip} if skip else check(
      "input_pipeline", lambda: pipeline(_PIPELINE_IMAGES.value, _PIPELINE_BATCHES.value),
      problems)
  with open(_REPORT.value, "w") as file:
    json.dump(report, file, indent=2)
  print(json.dumps(report, indent=2))
  print(f"Wrote {_REPORT.value}" + (f"; {len(problems)} problem(s)" if problems else ""))
  if problems:
    sys.exit(1)


if __name__ == "__main__":
  _REPORT = flags.DEFINE_string("report", "doctor.json", "Where to write the JSON report.")
  _TRAIN_STEPS = flags.DEFINE_integer("train_steps", 30, "Steps of the tiny model's training.")
  _MODELS = flags.DEFINE_list("models", ["ViT-B-32", "ViT-B-16"], "Models whose speed to measure.")
  _PER_CHIP_BATCH = flags.DEFINE_integer(
      "per_chip_batch", 0, "Samples per chip of the speed runs; 0: the largest that fits "
      "(searched; on a CPU, 0 skips them).")
  _SEARCH_FROM = flags.DEFINE_integer("search_from", 256,
                                      "Samples per chip at which the batch search starts.")
  _SPEED_STEPS = flags.DEFINE_integer("speed_steps", 10, "Timed steps of each speed run.")
  _PIPELINE_IMAGES = flags.DEFINE_integer(
      "pipeline_images", 128, "Generated JPEGs the pipeline reads; 0 skips the pipeline figure.")
  _PIPELINE_BATCHES = flags.DEFINE_integer("pipeline_batches", 3,
                                           "Timed batches of 64 of the pipeline, after one.")
  app.run(main)
