"""How fast a run trains on this host's devices: step time, samples/s per chip and MFU.

clip_jax.doctor and benchmarks/accelerator.py measure with it. A run trains as the paper's does
(configs/webdataset.py: AdamW, float32 parameters and optimiser state, the softmax loss over the
global batch), here with bfloat16 compute and scanned blocks, data parallel over all of this
host's devices: the step that clip_jax.train compiles (clip_jax.program), on random batches.

MFU = model FLOPs of a step (clip_jax.flops: forward and backward, without remat's recompute) /
step time / chips / the chip's peak dense bfloat16 FLOP/s (clip_jax.accelerators.CHIPS).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np

from clip_jax import accelerators
from clip_jax import flops
from clip_jax import plan
from clip_jax import program as program_lib
from clip_jax import settings
from clip_jax import sharding

# The repository's config of the paper's runs (configs/ sits beside the package).
PAPER_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "configs", "webdataset.py")
PAPER_GLOBAL_BATCH = 32_768
SETTINGS = ("plain", "remat", "blockwise", "blockwise+remat")  # paper_run's loss and remat


def paper_run(model: str, setting: str, **changes) -> settings.Run:
  """The paper's run (configs/webdataset.py, global batch 32,768) with `model`, bfloat16 compute,
  scanned blocks and `setting`'s loss and remat (one of SETTINGS); `changes` as flattened
  config keys."""
  config = settings.load_config_file(PAPER_CONFIG)
  config.global_batch_size = PAPER_GLOBAL_BATCH
  config.model.name = model
  config.model.overrides.dtype = "bfloat16"
  config.model.overrides.scan = True
  config.model.overrides.remat = "remat" in setting
  config.loss.blockwise = "blockwise" in setting
  config.update_from_flattened_dict(changes)
  return settings.parse(config, require_data=False)  # Nothing here reads data.


def random_batch(run: settings.Run, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Random uint8 images and token ids ending in end-of-text, as the input pipeline yields."""
  size, context = run.data.image_size, run.data.context_length
  vocab = run.model.architecture.text.vocab_size
  text = rng.integers(1, vocab - 1, (run.global_batch_size, context), dtype=np.int32)
  text[:, -1] = vocab - 1
  return {"image": rng.integers(0, 256, (run.global_batch_size, size, size, 3), dtype=np.uint8),
          "text": text}


def seconds_per_call(function, *arguments, repeats: int) -> float:
  """Mean seconds of `function(*arguments)` after one warm-up call; results awaited each time."""
  jax.block_until_ready(function(*arguments))
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(function(*arguments))
  return (time.perf_counter() - start) / repeats


def seconds_per_step(step, state, batch, steps: int, warmup: int) -> tuple[float, Any]:
  """Mean seconds of `steps` train steps (each passing the state on, the step donates it), after
  `warmup` steps; and the last state."""
  for _ in range(warmup):
    state, _ = step(state, batch)
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  return (time.perf_counter() - start) / steps, state


def largest_per_chip_batch(run: settings.Run, devices: list, start: int) -> int:
  """clip_jax.plan's search (to within 1/16), from `start` samples per chip, against the memory
  JAX reports for the devices. Each probe compiles."""
  stats = devices[0].memory_stats() or {}
  if "bytes_limit" not in stats:
    raise ValueError(f"{devices[0].device_kind} reports no memory limit; give the batch per "
                     "chip instead of searching for it.")
  probe = dataclasses.replace(run, global_batch_size=start * len(devices))
  found = plan.largest_batch(probe, devices, "this host", stats["bytes_limit"])
  if not found.fits:
    raise ValueError(f"Not even {found.run.global_batch_size // len(devices)} sample per chip "
                     f"fits:\n{plan.describe(found)}")
  return found.run.global_batch_size // len(devices)


def train_step_seconds(run: settings.Run, steps: int, warmup: int = 2) -> tuple[dict, Any]:
  """Seconds to compile `run`'s train step, per step (mean of `steps` after `warmup`), and to move
  one host batch to the devices; and the last train state."""
  mesh = sharding.create_mesh(run.mesh)
  program = program_lib.make_program(run, mesh)
  state = jax.jit(program.init, out_shardings=program.state_shardings)(jax.random.PRNGKey(0))
  batch_numpy = random_batch(run, np.random.default_rng(0))
  transfer_s = seconds_per_call(sharding.global_batch, batch_numpy, mesh, repeats=3)
  batch = sharding.global_batch(batch_numpy, mesh)
  start = time.perf_counter()
  step = program.step_function(0.0).lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  step_s, state = seconds_per_step(step, state, batch, steps, warmup)
  return dict(compile_s=compile_s, step_s=step_s, transfer_s=transfer_s), state


def mfu(run: settings.Run, step_s: float, devices: list) -> float | None:
  """Model FLOPs utilisation of a step of `step_s` seconds; None for a chip without known peak."""
  chip = accelerators.chip_of(devices[0].device_kind)
  if chip is None:
    return None
  model_flops = run.global_batch_size * flops.train_flops_per_sample(
      run.model.architecture, run.global_batch_size)["total"].total
  return model_flops / step_s / len(devices) / chip.peak_bf16_flops
