"""Training speed on this host's GPUs or TPU chips: for each model at the largest per-chip batch
that fits, samples/s per chip, MFU against the chip's peak, and where the step's time goes.

  python -m benchmarks.accelerator                                 # ViT-B-32, ViT-B-16, ViT-L-14
  python -m benchmarks.accelerator --models=ViT-B-16 --per_chip_batch=512

Each model trains as the paper's run does (configs/webdataset.py: AdamW, float32 parameters and
optimiser state, the softmax loss over the global batch), with bfloat16 compute and scanned
blocks, data parallel over all of this host's devices: the step that clip_jax.train compiles
(clip_jax.program). Without --per_chip_batch, the batch is clip_jax.plan's largest that fits the
memory JAX reports for the device (to within 1/16; each probe compiles, the runs do not).

MFU = model FLOPs of a step (clip_jax.flops: forward and backward, without remat's recompute) /
step time / chips / the chip's peak dense bfloat16 FLOP/s (clip_jax.accelerators.CHIPS). The
breakdown times the loss with its gradients (on features of the step's shapes) and the AdamW
update (on the step's parameters) on their own; the towers' forward and backward are the rest of
the step. Moving a batch from host to device is timed apart: the input pipeline overlaps it with
the step.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import optax

from benchmarks import common
from clip_jax import accelerators
from clip_jax import losses
from clip_jax import program as program_lib
from clip_jax import settings
from clip_jax import sharding
from clip_jax import throughput


def measure(run: settings.Run, steps: int) -> dict[str, float]:
  """Compile and step times of `run`'s train step, and the times of its parts (see the module
  docstring), in seconds."""
  times, state = throughput.train_step_seconds(run, steps)
  mesh = sharding.create_mesh(run.mesh)
  loss_fn = losses.make_loss_fn(run.loss.name, mesh, sharding.BATCH_AXES,
                                blockwise=run.loss.blockwise, tile_size=run.loss.tile_size)
  features = jax.device_put(
      jax.random.normal(jax.random.PRNGKey(1), (2, run.global_batch_size,
                                                run.model.architecture.embed_dim)),
      jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, sharding.BATCH_AXES)))
  loss_and_grads = jax.jit(jax.value_and_grad(
      lambda image, text: loss_fn(image, text, jnp.log(100.0), None), argnums=(0, 1)))
  loss_s = throughput.seconds_per_call(loss_and_grads, features[0], features[1], repeats=steps)

  optimizer, _ = program_lib.create_optimizer(run)
  update = jax.jit(lambda grads, opt_state, params: optax.apply_updates(
      params, optimizer.update(grads, opt_state, params)[0]))
  optimizer_s = throughput.seconds_per_call(update, state.params, state.opt_state, state.params,
                                            repeats=steps)
  return dict(times, loss_s=loss_s, optimizer_s=optimizer_s)


def table_row(model: str, devices: list, per_chip: int, times: dict[str, float],
              run: settings.Run) -> list:
  step_s = times["step_s"]
  towers_s = step_s - times["loss_s"] - times["optimizer_s"]
  share = lambda seconds: f"{seconds * 1e3:.1f} ({seconds / step_s:.0%})"  # noqa: E731
  mfu = throughput.mfu(run, step_s, devices)
  return [model, f"{len(devices)} x {devices[0].device_kind}", per_chip,
          "on" if run.model.architecture.remat else "off", f"{times['compile_s']:.0f}",
          f"{step_s * 1e3:.1f}", f"{per_chip / step_s:,.0f}", "-" if mfu is None else f"{mfu:.1%}",
          share(towers_s), share(times["loss_s"]), share(times["optimizer_s"]),
          f"{times['transfer_s'] * 1e3:.1f}"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", default="ViT-B-32,ViT-B-16,ViT-L-14")
  parser.add_argument("--per_chip_batch", type=int, default=0,
                      help="Samples per chip; 0: the largest that fits (clip_jax.plan's search).")
  parser.add_argument("--search_from", type=int, default=256,
                      help="Samples per chip at which the search starts.")
  parser.add_argument("--remat", action="store_true", help="Recompute each block's activations.")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--no_record", action="store_true", help="Do not append to RESULTS.md.")
  args = parser.parse_args()
  devices = jax.devices()
  header = ["model", "devices", "batch per chip", "remat", "compile s", "step ms",
            "samples/s per chip", "MFU", "towers fwd+bwd ms", "loss fwd+bwd ms", "AdamW ms",
            "host->device ms per batch"]
  rows = []
  for model in args.models.split(","):
    run = throughput.paper_run(model, "remat" if args.remat else "plain")
    try:
      per_chip = args.per_chip_batch or throughput.largest_per_chip_batch(run, devices,
                                                                           args.search_from)
    except ValueError as error:
      raise SystemExit(str(error)) from None
    run = dataclasses.replace(run, global_batch_size=per_chip * len(devices))
    rows.append(table_row(model, devices, per_chip, measure(run, args.steps), run))
    print(common.format_table(header, rows[-1:]), flush=True)
  chip = accelerators.chip_of(devices[0].device_kind)
  common.report(
      "Train step on accelerators", header, rows,
      "The paper's ViT training (AdamW, float32 parameters, softmax loss over the global batch) "
      "with bfloat16 compute and scanned blocks, data parallel over the host's devices. MFU = "
      "clip_jax.flops' model FLOPs / step time / chips / peak bfloat16 FLOP/s ("
      + (chip.source if chip else "chip not in clip_jax.accelerators.CHIPS") + "). Loss and "
      "AdamW timed alone; towers = step - loss - AdamW.", record=not args.no_record)


if __name__ == "__main__":
  main()
