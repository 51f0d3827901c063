"""Throughput of the compiled train step, its FLOP/s and MFU, compile time with and without scan,
and (when torch and open_clip are installed) open_clip's train step on the same model, batch,
optimiser and compute dtype in the same run, with the ratio.

  python -m benchmarks.train_step --models=ViT-B-32 --batch_sizes=32 --steps=3

`--flip=0.5,0.75` also times FLIP's masked steps (that fraction of each image's patches dropped)
and reports each one's throughput against the unmasked step's of the same model, batch and scan
setting. The steps of one model and setting take turns, one step each, so that a shared
machine's changing load weighs on all of them alike.

`--dtypes=float32,bfloat16` times both compute dtypes (parameters stay float32); open_clip's
bfloat16 step is its automatic mixed precision (`torch.autocast`, open_clip's `amp_bf16`).

MFU = achieved FLOP/s of the step (XLA's cost analysis of the compiled step, forward + backward +
AdamW) divided by the peak measured on this machine for a large matmul in the compute dtype.
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from clip_jax import losses
from clip_jax import models
from clip_jax import optim
from clip_jax import settings
from clip_jax import sharding
from clip_jax import train_step as train_step_lib


def measure_matmul_peak(dtype: str = "float32", size: int = 2048, repeats: int = 10) -> float:
  """FLOP/s of a large square matmul in `dtype` summing in float32, as the models' dots do: the
  machine's practical peak for this dtype."""
  a = jnp.ones((size, size), dtype)
  matmul = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32).astype(x.dtype))
  matmul(a).block_until_ready()
  start = time.perf_counter()
  for _ in range(repeats):
    a = matmul(a)
  a.block_until_ready()
  return 2 * size**3 * repeats / (time.perf_counter() - start)


# open_clip's ViT defaults (its reference step does not clip gradients either).
OPTIMIZER = settings.Optim(warmup_steps=10, grad_clip_norm=0.0)


def compile_step(step_fn, state, batch) -> tuple[Any, float, float]:
  """(the compiled step, seconds to compile it, XLA's FLOP count of it)."""
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_seconds = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return compiled, compile_seconds, float(cost.get("flops", 0.0))


def time_interleaved(compiled_steps: dict[float, Any], state, batch,
                     steps: int) -> dict[float, float]:
  """Mean seconds per step of each compiled step, one step of each in turn `steps` times (after
  one warm-up each), so that a load that changes during the run weighs on all of them alike."""
  seconds = {key: 0.0 for key in compiled_steps}
  for round_index in range(steps + 1):
    for key, compiled in compiled_steps.items():
      start = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready(metrics)
      if round_index:  # round 0 is the warm-up
        seconds[key] += (time.perf_counter() - start) / steps
  return seconds


def time_jax_steps(model_name: str, batch_size: int, steps: int, scan: bool, dtype: str,
                   remat: bool, mask_ratios: list[float]) -> dict[float, dict[str, float]]:
  """For each FLIP mask ratio: compile seconds, FLOPs, seconds and samples per step; the steps
  share one train state, which they pass on to each other."""
  mesh = sharding.create_mesh()
  model = models.create_model(model_name, scan=scan, dtype=dtype, remat=remat)
  config = models.get_model_config(model_name)
  optimizer, schedule = optim.create_optimizer(OPTIMIZER, total_steps=1000)
  loss = losses.make_loss("softmax", mesh, sharding.BATCH_AXES)
  size, context = config.vision.image_size, config.text.context_length
  init = functools.partial(train_step_lib.create_train_state, model=model, optimizer=optimizer,
                           image_shape=(batch_size, size, size, 3),
                           text_shape=(batch_size, context))
  shardings = sharding.tree_shardings(jax.eval_shape(init, jax.random.PRNGKey(0)), mesh)
  state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, config.text.vocab_size - 1, (batch_size, context), dtype=np.int32)
  tokens[:, -1] = config.text.vocab_size - 1  # end-of-text, where the text features are pooled.
  batch = sharding.global_batch({"image": rng.normal(size=(batch_size, size, size, 3)).astype(
      np.float32), "text": tokens}, mesh)
  results, compiled_steps = {}, {}
  for mask_ratio in mask_ratios:
    step_fn = jax.jit(train_step_lib.make_train_step(
        model, optimizer, loss, schedule, train_step_lib.StepOptions(mask_ratio=mask_ratio)),
                      in_shardings=(shardings, sharding.batch_sharding(mesh)),
                      out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
    compiled_steps[mask_ratio], compile_seconds, flops = compile_step(step_fn, state, batch)
    results[mask_ratio] = {"compile_s": compile_seconds, "flops": flops}
  for mask_ratio, seconds in time_interleaved(compiled_steps, state, batch, steps).items():
    results[mask_ratio].update(step_s=seconds, samples_per_s=batch_size / seconds)
  return results


def time_open_clip_step(model_name: str, batch_size: int, steps: int,
                        dtype: str) -> float | None:
  """Seconds per open_clip train step (forward, ClipLoss, backward, AdamW), or None without it.

  For bfloat16 the forward and loss run under `torch.autocast` in bfloat16, as open_clip's own
  `--precision amp_bf16` trains (its parameters and optimiser stay float32, as ours do).
  """
  try:
    import open_clip  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  torch.manual_seed(0)
  if models.get_model_config(model_name).activation == "quick_gelu":
    model_name += "-quickgelu"  # open_clip's name for the same architecture with OpenAI's GELU.
  model = open_clip.create_model(model_name)
  model.train()
  size = model.visual.image_size
  size = size[0] if isinstance(size, (tuple, list)) else size
  decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
  no_decay = [p for n, p in model.named_parameters()
              if not (p.ndim >= 2 and "logit_scale" not in n)]
  optimizer = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                                 {"params": decay, "weight_decay": 0.2}],
                                lr=5e-4, betas=(0.9, 0.98), eps=1e-6)
  loss_fn = open_clip.ClipLoss()
  images = torch.randn(batch_size, 3, size, size)
  texts = torch.randint(1, 49407, (batch_size, 77))
  texts[:, -1] = 49407

  def step():
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
      image_features, text_features, logit_scale = model(images, texts)[:3]
      loss = loss_fn(image_features, text_features, logit_scale)
    loss.backward()
    optimizer.step()

  step()  # warm-up
  start = time.perf_counter()
  for _ in range(steps):
    step()
  return (time.perf_counter() - start) / steps


def parse_mask_ratios(text: str) -> list[float]:
  """`--flip`'s ratios, the unmasked step (0) first: the others' speed-ups are against it."""
  ratios = [float(ratio) for ratio in text.split(",")]
  return [0.0] + [ratio for ratio in ratios if ratio != 0.0]


def table_row(model_name: str, batch_size: int, args, dtype: str, scan: bool, mask_ratio: float,
              timing: dict[str, float], flops: float | None, peak: float,
              unmasked_step_s: float, reference: float | None) -> list:
  """One row of the table. `flops` None: not known (XLA counts a scanned loop's body once)."""
  achieved = None if flops is None else flops / timing["step_s"]
  return [model_name, batch_size, dtype, args.remat, scan, f"{mask_ratio:g}",
          f"{timing['compile_s']:.1f}", f"{timing['step_s']:.2f}",
          f"{timing['samples_per_s']:.1f}", f"{unmasked_step_s / timing['step_s']:.2f}x",
          "-" if flops is None else f"{flops / 1e9:.0f}",
          "-" if achieved is None else f"{achieved / 1e9:.1f}",
          "-" if achieved is None else f"{achieved / peak:.0%}",
          "-" if reference is None else f"{reference:.2f}",
          "-" if reference is None else f"{reference / timing['step_s']:.2f}x"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", default="ViT-B-32")
  parser.add_argument("--batch_sizes", default="32")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--dtypes", default="float32",
                      help="Compute dtypes to time (float32, bfloat16), e.g. float32,bfloat16.")
  parser.add_argument("--remat", action="store_true")
  parser.add_argument("--scans", default="false,true",
                      help="Which of the unrolled (false) and scanned (true) blocks to time.")
  parser.add_argument("--flip", default="0",
                      help="FLIP mask ratios to time, e.g. 0,0.5,0.75 (0 is always timed).")
  parser.add_argument("--no_open_clip", action="store_true", help="Skip the open_clip reference.")
  parser.add_argument("--no_record", action="store_true", help="Do not append to RESULTS.md.")
  args = parser.parse_args()
  scans = [{"false": False, "true": True}[scan] for scan in args.scans.split(",")]
  mask_ratios = parse_mask_ratios(args.flip)

  dtypes = args.dtypes.split(",")
  peaks = {dtype: measure_matmul_peak(dtype) for dtype in dtypes}
  peaks_text = ", ".join(f"{dtype} {peak / 1e9:.1f}" for dtype, peak in peaks.items())
  print(f"measured matmul peaks (GFLOP/s): {peaks_text}")
  header = ["model", "batch", "dtype", "remat", "scan", "FLIP mask ratio", "compile s", "step s",
            "samples/s", "speed-up vs unmasked", "GFLOP/step", "GFLOP/s", "MFU",
            "open_clip step s", "speed-up vs open_clip"]
  rows = []
  for model_name in args.models.split(","):
    for batch_size in map(int, args.batch_sizes.split(",")):
      for dtype in dtypes:
        reference = None if args.no_open_clip else time_open_clip_step(model_name, batch_size,
                                                                        args.steps, dtype)
        flops = {}  # By mask ratio, from the unrolled step: XLA counts a scanned body once.
        for scan in scans:
          timings = time_jax_steps(model_name, batch_size, args.steps, scan=scan, dtype=dtype,
                                   remat=args.remat, mask_ratios=mask_ratios)
          for mask_ratio, timing in timings.items():
            if not scan:
              flops[mask_ratio] = timing["flops"]
            rows.append(table_row(model_name, batch_size, args, dtype, scan, mask_ratio, timing,
                                  flops.get(mask_ratio), peaks[dtype], timings[0.0]["step_s"],
                                  reference if mask_ratio == 0.0 else None))
            print(common.format_table(header, rows[-1:]), flush=True)
  common.report("Train step", header, rows,
                        f"Matmul peaks (2048^3, float32 sums) measured in the same run, "
                        f"GFLOP/s: {peaks_text}. MFU = XLA's FLOP count of the compiled step "
                        "/ step time / the peak of its compute dtype. Speed-up = open_clip "
                        "s/step / clip_jax s/step (open_clip: the same architecture, ClipLoss "
                        "and AdamW in the row's dtype: float32, or for bfloat16 its amp_bf16, "
                        "torch.autocast). FLIP: that fraction of each image's patches "
                        "dropped; speed-up vs unmasked = the unmasked step's s/step (same "
                        "model, batch and scan) / this one's.", record=not args.no_record)


if __name__ == "__main__":
  main()
