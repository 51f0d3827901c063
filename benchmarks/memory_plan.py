"""The memory plan of the paper's runs on TPU slices: clip_jax.plan for each row, in one table.

  python -m benchmarks.memory_plan                  # every row (each compiles: minutes each)
  python -m benchmarks.memory_plan --only=ViT-B-32  # the rows whose label contains this
  python -m benchmarks.memory_plan --attention=xla  # every row with XLA's attention

Every row is the paper's ViT-B/32 config (configs/webdataset.py: global batch 32,768, AdamW,
float32 parameters) with the row's model, bfloat16 compute and scanned blocks, and the row's loss
(plain or blockwise) and remat, and the attention kernel of `--attention` (default "auto": on
TPUs the Pallas splash kernel from 256 tokens on, XLA's below; clip_jax/models/attention.py); the
train step is compiled by libtpu for the row's slice, which needs `pip install -e ".[tpu]"` but no
TPU.
"""

from __future__ import annotations

import argparse
import math

from benchmarks import common
from clip_jax import accelerators
from clip_jax import plan
from clip_jax import throughput

GLOBAL_BATCH = throughput.PAPER_GLOBAL_BATCH

# (model, slice, settings): the paper's batch on slices its models are trained on today.
ROWS = (
    [("ViT-B-32", "v4-64", each) for each in throughput.SETTINGS]
    + [("ViT-B-32", "v5e-64", each) for each in ("plain", "blockwise+remat")]
    + [("ViT-B-16", "v5p-128", each) for each in ("plain", "blockwise+remat")]
    + [("ViT-B-16", "v5e-64", "blockwise+remat")]
    + [("ViT-L-14", "v5p-256", each) for each in ("plain", "blockwise+remat")]
    + [("ViT-L-14", "v4-256", "blockwise+remat")]
    + [("ViT-L-14-336", "v5p-256", each) for each in ("plain", "blockwise+remat")]
    + [("ViT-H-14", "v5p-512", each) for each in ("blockwise", "blockwise+remat")]
    + [("RN50x64", "v5p-512", each) for each in ("plain", "blockwise")]
)


def table_row(model: str, slice_name: str, setting: str, result: plan.Plan) -> list:
  step = result.steps[0]
  fits = result.fits
  rate, mfu = result.samples_per_second_per_chip(), result.mfu()
  bound = result.roofline(step)[1] if fits else ""
  gib = lambda value: "-" if math.isnan(value) else f"{value / accelerators.GIB:.1f}"
  return [model, slice_name, result.chips, GLOBAL_BATCH // result.chips, setting,
          gib(step.state_bytes), gib(step.temp_bytes), gib(step.total_bytes),
          f"{result.hbm_bytes / accelerators.GIB:.0f}", "yes" if fits else "**no**",
          f"{rate:,.0f}" if fits else "-", f"{mfu:.0%}" if fits else "-", bound]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--only", default="", help="Rows whose 'model slice setting' contains this.")
  parser.add_argument("--attention", default="auto",
                      help="model.overrides.attention of every row: auto, xla or splash.")
  parser.add_argument("--no_record", action="store_true", help="Do not append to RESULTS.md.")
  args = parser.parse_args()
  header = ["model", "slice", "chips", "batch per chip", "settings", "state GiB",
            "temporaries GiB", "total GiB", "HBM GiB", "fits", "est. samples/s per chip",
            "est. MFU", "bound"]
  rows = []
  for model, slice_name, setting in ROWS:
    if args.only not in f"{model} {slice_name} {setting}":
      continue
    devices = accelerators.topology_devices(slice_name)
    result = plan.plan_run(
        throughput.paper_run(model, setting, **{"model.overrides.attention": args.attention}),
        devices, slice_name)
    label = setting if args.attention == "auto" else f"{setting}, attention={args.attention}"
    rows.append(table_row(model, slice_name, label, result))
    print(common.format_table(header, rows[-1:]), flush=True)
  common.report(
      "Memory plan of the paper's runs on TPU slices (compiled by libtpu, no TPU used)",
      header, rows,
      f"Global batch {GLOBAL_BATCH:,}, bfloat16 compute, float32 parameters and AdamW state, "
      "scanned blocks, data parallel (fsdp=1), attention=auto (the splash kernel from 256 "
      "tokens) unless the settings say otherwise. state = parameters + optimiser state per chip; "
      "total = arguments + outputs not donated + temporaries + code, as compiled, per chip; "
      "where the compiler refused, temporaries are the figure it gave and total adds state and "
      "batch to it. Estimates are clip_jax.plan's roofline (compute or HBM bound, communication "
      "left out): upper bounds. Chip figures: "
      + "; ".join(chip.source for chip in accelerators.CHIPS[:4]) + ".", record=not args.no_record)


if __name__ == "__main__":
  main()
