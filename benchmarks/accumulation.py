"""Gradient accumulation on this machine's devices: memory per device and time per step of a
global batch in micro-batches, against the same batch in one piece and against the largest batch
that fits in one piece.

  python -m benchmarks.accumulation --model=ViT-B-32 --global_batch=4096 \\
      --accumulation_steps=1,16 --memory_gib=20 --max_batch --steps=0
  python -m benchmarks.accumulation --model=ViT-B-32 --global_batch=256 --accumulation_steps=1,4

Each row compiles the train step of the paper's config (configs/webdataset.py, AdamW, float32
parameters) with the row's batch and `accumulation_steps`, through the code training runs
(clip_jax.program), and reads its memory per device as clip_jax.plan does (arguments, outputs,
temporaries and code, as XLA compiled them). `--max_batch` adds the largest global batch that
fits in `--memory_gib` without accumulation (clip_jax.plan's search). Time: the mean of `--steps`
steps on random data (0 times nothing) after the step is compiled and `--warmup` steps; a step
over `--memory_gib` is not run. Long steps (ViT-B/32 at 4,096 takes over an hour on two CPU
cores) are timed with `--warmup=0 --steps=1`:

  python -m benchmarks.accumulation --model=ViT-B-32 --global_batch=4096 \\
      --accumulation_steps=16 --setting=remat --scan --warmup=0 --steps=1
"""

from __future__ import annotations

import argparse

from benchmarks import common
from clip_jax import accelerators
from clip_jax import models
from clip_jax import plan
from clip_jax import settings
from clip_jax import throughput


def run_of(args, global_batch: int, accumulation_steps: int) -> settings.Run:
  """The paper's run with the model (its image size and context length), batch and dtype."""
  architecture = models.get_model_config(args.model)
  return throughput.paper_run(args.model, args.setting, **{
      "global_batch_size": global_batch, "accumulation_steps": accumulation_steps,
      "model.overrides.dtype": args.dtype, "model.overrides.scan": args.scan,
      "data.image_size": architecture.vision.image_size,
      "data.context_length": architecture.text.context_length})


def table_row(result: plan.Plan, step_seconds: float | None, reference_seconds: float | None,
              note: str) -> list:
  step, run = result.steps[0], result.run
  per_device = run.global_batch_size // result.chips
  gib = lambda value: f"{value / accelerators.GIB:.2f}"  # noqa: E731
  return [run.model.name, f"{run.global_batch_size:,}", run.accumulation_steps,
          f"{per_device // run.accumulation_steps:,}", gib(step.state_bytes),
          gib(step.temp_bytes), gib(step.total_bytes), "yes" if result.fits else "no",
          "-" if step_seconds is None else f"{step_seconds:.3g}" if step_seconds < 1000
          else f"{step_seconds:,.0f}",
          "-" if step_seconds is None or reference_seconds is None
          else f"{step_seconds / reference_seconds:.2f}x", note]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", default="ViT-B-32")
  parser.add_argument("--global_batch", type=int, default=4096)
  parser.add_argument("--accumulation_steps", default="1,16",
                      help="Micro-batches per step to compare, e.g. 1,4,16 (1: no accumulation).")
  parser.add_argument("--setting", default="plain", choices=throughput.SETTINGS,
                      help="The loss (plain or blockwise) and whether the towers use remat.")
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--memory_gib", type=float, default=20.0,
                      help="Memory per device that a step may use.")
  parser.add_argument("--max_batch", action="store_true",
                      help="Add the largest global batch that fits without accumulation.")
  parser.add_argument("--scan", action="store_true",
                      help="Scan the towers' blocks (remat saves memory on XLA:CPU only with it).")
  parser.add_argument("--steps", type=int, default=1, help="Steps to time; 0 times nothing.")
  parser.add_argument("--warmup", type=int, default=1, help="Untimed steps after compiling.")
  parser.add_argument("--no_record", action="store_true", help="Do not append to RESULTS.md.")
  args = parser.parse_args()
  devices, target, _ = plan.target_devices("")
  memory = args.memory_gib * accelerators.GIB
  header = ["model", "global batch", "accumulation steps", "micro-batch per device",
            "state GiB", "temporaries GiB", "total GiB", f"fits {args.memory_gib:g} GiB",
            "step s", "time vs one piece", "row"]
  rows, reference_seconds = [], None
  plans = [(plan.plan_run(run_of(args, args.global_batch, steps), devices, target, memory),
            "the batch") for steps in map(int, args.accumulation_steps.split(","))]
  if args.max_batch:
    largest = plan.largest_batch(run_of(args, args.global_batch, 1), devices, target, memory)
    plans.append((largest, "largest batch in one piece"))
  for result, note in plans:
    seconds = None
    if args.steps and result.fits:
      seconds = throughput.train_step_seconds(result.run, args.steps, args.warmup)[0]["step_s"]
      if result.run.accumulation_steps == 1 and result.run.global_batch_size == args.global_batch:
        reference_seconds = seconds
    rows.append(table_row(result, seconds, reference_seconds, note))
    print(common.format_table(header, rows[-1:]), flush=True)
  common.report(
      "Gradient accumulation: memory and time per step", header, rows,
      f"{target}; {args.dtype} compute, {'blockwise' if 'blockwise' in args.setting else 'plain'} "
      f"loss, remat {'on' if 'remat' in args.setting else 'off'}, "
      f"{'scanned' if args.scan else 'unrolled'} blocks, float32 parameters and AdamW state. "
      "Memory per device as XLA compiled the step (state = parameters + optimiser state; total "
      "= arguments + outputs not donated + temporaries + code). Time vs one piece = step s / "
      "the step s of the same global batch without accumulation.", record=not args.no_record)


if __name__ == "__main__":
  main()
