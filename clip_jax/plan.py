"""Whether a run fits, and how fast it would go, before it gets a chip: compiles its train step.

  python -m clip_jax.plan --config=configs/webdataset.py --topology=v5p-128
  python -m clip_jax.plan --config=configs/webdataset.py --topology=v5e-16 --max_batch --hbm_gib=14

`--topology` names a TPU slice (v4, v5e, v5p, v6e); libtpu compiles for it on any machine, the
TPU compiler's own verdict on memory included. Without it the plan is for this machine's devices
(its GPUs, say). The step is built by the code that builds it for training (clip_jax.program's
`make_program`: mesh, shardings, loss, FLIP, remat, scan, dtype, optimiser), so what compiles
here compiles there.

Per chip it prints the parameters and optimiser state, the batch, the temporaries and the total
against the chip's HBM; the model FLOPs of a step (clip_jax.flops: XLA counts a scanned loop's
body once); and a roofline estimate: the step takes at least its FLOPs over the chip's peak and
its HBM traffic over the chip's bandwidth (XLA's bytes accessed; for scanned blocks, extrapolated
in depth from the same step unrolled at one and two blocks per tower, so that only what the loop
repeats is multiplied), which bounds samples/s and MFU from above. Communication is left out. The
exit status is 1 when the run does not fit.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging
from ml_collections import config_flags

from clip_jax import accelerators  # pylint: disable=g-import-not-at-top,wrong-import-position
from clip_jax import flip
from clip_jax import flops
from clip_jax import settings
from clip_jax import sharding
from clip_jax.models import towers

GIB = accelerators.GIB


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """One compiled step (one FLIP phase) on one chip."""
  mask_ratio: float
  steps: int  # of the run that take this step
  state_bytes: float  # parameters, optimiser state, the rest of the train state
  batch_bytes: float
  temp_bytes: float
  total_bytes: float  # arguments, outputs not donated, temporaries and code, as compiled
  model_flops: float  # of the whole step, over all chips
  hardware_flops: float  # model FLOPs plus what remat recomputes
  hbm_traffic: float | None  # bytes per chip
  out_of_memory: str = ""  # the compiler's message when it rejected the step


@dataclasses.dataclass(frozen=True)
class Plan:
  run: settings.Run
  target: str  # "v5p-128 (64 x TPU v5)"
  chips: int
  hosts: int
  chip: accelerators.Chip | None
  mesh: dict[str, int]  # axis -> size
  hbm_bytes: float | None  # each chip's memory
  steps: tuple[StepPlan, ...]

  @property
  def fits(self) -> bool:
    return all(not step.out_of_memory and (self.hbm_bytes is None
                                            or step.total_bytes <= self.hbm_bytes)
               for step in self.steps)

  @property
  def peak_bytes(self) -> float:
    return max(step.total_bytes for step in self.steps)

  def roofline(self, step: StepPlan) -> tuple[float, str] | None:
    """The roofline's lower bound on the step's time, and what bounds it: "compute" or "HBM"."""
    if self.chip is None:
      return None
    compute = step.hardware_flops / self.chips / self.chip.peak_bf16_flops
    memory = (step.hbm_traffic or 0.0) / self.chip.hbm_bytes_per_s
    return (compute, "compute") if compute >= memory else (memory, "HBM")

  def step_seconds(self, step: StepPlan) -> float | None:
    return None if self.chip is None else self.roofline(step)[0]

  def samples_per_second_per_chip(self) -> float | None:
    """Over the whole run, each FLIP phase at its own speed."""
    if self.chip is None:
      return None
    seconds = sum(step.steps * self.step_seconds(step) for step in self.steps)
    return self.run.total_steps * self.run.global_batch_size / seconds / self.chips

  def mfu(self) -> float | None:
    if self.chip is None:
      return None
    seconds = sum(step.steps * self.step_seconds(step) for step in self.steps)
    model_flops = sum(step.steps * step.model_flops for step in self.steps)
    return model_flops / seconds / self.chips / self.chip.peak_bf16_flops


def _shard_bytes(tree) -> float:
  """Bytes of one device's shards of a pytree of sharded ShapeDtypeStructs."""
  import jax  # pylint: disable=g-import-not-at-top
  return float(sum(math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
                   for leaf in jax.tree.leaves(tree)))


def _phases(run: settings.Run) -> dict[float, int]:
  """FLIP's mask ratios and how many steps of the run take each."""
  unmasked = flip.first_unmasked_step(run.flip, run.total_steps)
  phases = {}
  for ratio, steps in ((flip.mask_ratio_at(1, run.flip, run.total_steps), unmasked - 1),
                       (0.0, run.total_steps - unmasked + 1)):
    if steps:
      phases[ratio] = phases.get(ratio, 0) + steps
  return phases


def _out_of_memory(error: Exception) -> tuple[str, float]:
  """The compiler's sentence when it rejected a step for memory ('' if it did not), and the bytes
  of temporaries it said the step needs (NaN where it did not say)."""
  text = str(error)
  if "RESOURCE_EXHAUSTED" not in text and "out of memory" not in text.lower():
    return "", math.nan
  sentence = next(line for line in text.splitlines() if line.strip()).strip()
  needed = re.search(r"temporaries \(([\d.]+)([KMGT])\)", sentence)
  scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
  return sentence, float(needed.group(1)) * scale[needed.group(2)] if needed else math.nan


def _bytes_accessed(compiled) -> float:
  """XLA's count of the bytes a compiled program reads and writes per device (0 if it has none)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("bytes accessed", 0.0))


def _with_depths(run: settings.Run, vision_layers: int | None, text_layers: int) -> settings.Run:
  """`run` with its blocks unrolled, and that many of them per tower (None: the image tower's
  own, one without scanned blocks such as a ModifiedResNet)."""
  architecture = run.model.architecture
  field = towers.of(architecture.vision).scanned_layers
  vision = (architecture.vision if vision_layers is None
            else dataclasses.replace(architecture.vision, **{field: vision_layers}))
  architecture = dataclasses.replace(architecture, scan=False, vision=vision,
                                     text=dataclasses.replace(architecture.text,
                                                              layers=text_layers))
  return dataclasses.replace(run, model=dataclasses.replace(run.model, architecture=architecture))


def _bytes_accessed_unscanned(run: settings.Run, measure) -> float:
  """The bytes accessed of `run`'s step with scanned blocks, as if they were unrolled.

  XLA's cost analysis counts a while loop's body once, so a scanned stack of L blocks reads as
  one. Scaling the whole count by the FLOPs' undercount would multiply what runs once too (the
  embeddings, the loss, the optimiser's update, the gathers), so instead the same step is compiled
  unrolled at one block per tower, and at two in each tower in turn: its bytes are linear in each
  tower's depth (every block is the same program), which gives the count at the real depths.
  `measure(run)` compiles a run and returns its bytes accessed.
  """
  architecture = run.model.architecture
  scanned_layers = towers.of(architecture.vision).scanned_layers
  one = 1 if scanned_layers else None
  base = measure(_with_depths(run, one, 1))
  total = base + (architecture.text.layers - 1) * (measure(_with_depths(run, one, 2)) - base)
  if scanned_layers:
    total += ((getattr(architecture.vision, scanned_layers) - 1)
              * (measure(_with_depths(run, 2, 1)) - base))
  return total


def plan_run(run: settings.Run, devices: list, target: str,
             hbm_bytes: float | None = None) -> Plan:
  """Compiles every FLIP phase's train step of `run` for `devices` and reads its costs."""
  import jax  # pylint: disable=g-import-not-at-top
  from clip_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from clip_jax import program as program_lib  # pylint: disable=g-import-not-at-top
  chip = accelerators.chip_of(devices[0].device_kind)
  if hbm_bytes is None and chip is not None:
    hbm_bytes = chip.hbm_bytes
  hosts = len({device.process_index for device in devices})
  mesh = sharding.create_mesh(run.mesh, devices)
  sharding.check_batch_size(run.global_batch_size, mesh, hosts, run.accumulation_steps)
  program = program_lib.make_program(run, mesh)
  state = checkpoint.abstract_like(program.abstract_state, program.state_shardings)
  size, context = run.data.image_size, run.data.context_length
  batch_sharding = sharding.batch_sharding(mesh)
  batch = {"image": jax.ShapeDtypeStruct((run.global_batch_size, size, size, 3), "uint8",
                                         sharding=batch_sharding),
           "text": jax.ShapeDtypeStruct((run.global_batch_size, context), "int32",
                                        sharding=batch_sharding)}
  def compiled_step(variant: settings.Run, mask_ratio: float):
    variant_program = program if variant is run else program_lib.make_program(variant, mesh)
    variant_state = (state if variant is run else checkpoint.abstract_like(
        variant_program.abstract_state, variant_program.state_shardings))
    return variant_program.step_function(mask_ratio).lower(variant_state, batch).compile()

  step_plans = []
  for mask_ratio, steps in _phases(run).items():
    costs = dict(
        mask_ratio=mask_ratio, steps=steps, state_bytes=_shard_bytes(state),
        batch_bytes=_shard_bytes(batch),
        **{kind: run.global_batch_size * flops.train_flops_per_sample(
               run.model.architecture, run.global_batch_size, mask_ratio,
               hardware=kind == "hardware_flops",
               accumulated=run.accumulation_steps > 1)["total"].total
           for kind in ("model_flops", "hardware_flops")})
    try:
      compiled = compiled_step(run, mask_ratio)
    except Exception as error:  # pylint: disable=broad-except
      message, temporaries = _out_of_memory(error)
      if not message:
        raise
      step_plans.append(StepPlan(
          **costs, temp_bytes=temporaries,
          total_bytes=costs["state_bytes"] + costs["batch_bytes"] + temporaries,
          hbm_traffic=None, out_of_memory=message))
      continue
    memory = compiled.memory_analysis()
    total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
             - memory.alias_size_in_bytes + memory.temp_size_in_bytes
             + memory.generated_code_size_in_bytes)
    if run.model.architecture.scan:
      traffic = _bytes_accessed_unscanned(
          run, lambda variant, ratio=mask_ratio: _bytes_accessed(compiled_step(variant, ratio)))
    else:
      traffic = _bytes_accessed(compiled)
    step_plans.append(StepPlan(
        **costs, temp_bytes=float(memory.temp_size_in_bytes), total_bytes=float(total),
        hbm_traffic=traffic or None))
  return Plan(run=run, target=target, chips=len(devices), hosts=hosts, chip=chip,
              mesh=dict(mesh.shape), hbm_bytes=hbm_bytes, steps=tuple(step_plans))


def largest_batch(run: settings.Run, devices: list, target: str,
                  hbm_bytes: float | None = None) -> Plan:
  """The plan of the largest global batch that fits, to within 1/16.

  Each probe compiles, so the search aims rather than bisects: memory grows with the batch
  almost linearly (activations; the plain loss's logits add a square term), so the next probe
  goes where the line through the two probes nearest the boundary reaches the chip's memory,
  or, where that lies near or outside the bracket of the largest batch that fits and the
  smallest that does not, halfway between them.
  """
  unit = math.lcm(len(devices) * run.accumulation_steps,
                  len({device.process_index for device in devices}))
  probes: dict[int, Plan] = {}

  def probe(batch: int) -> Plan:
    batch = max(unit, batch // unit * unit)
    if batch not in probes:
      start = time.perf_counter()
      probes[batch] = plan_run(dataclasses.replace(run, global_batch_size=batch), devices, target,
                               hbm_bytes)
      print(f"global batch {batch:,}: {_gib(probes[batch].peak_bytes)} per chip, "
            f"{'fits' if probes[batch].fits else 'does not fit'} "
            f"(compiled in {time.perf_counter() - start:.0f} s)", flush=True)
    return probes[batch]

  first = probe(run.global_batch_size)
  if first.hbm_bytes is None:
    raise ValueError(f"--max_batch: the memory of {target}'s devices is not known.")
  probe(first.run.global_batch_size * 2 if first.fits else first.run.global_batch_size // 2)
  while True:
    fitting = [batch for batch, plan in probes.items() if plan.fits]
    failing = [batch for batch, plan in probes.items() if not plan.fits]
    low, high = max(fitting, default=0), min(failing, default=math.inf)
    if not fitting and high == unit:
      return probes[unit]  # Not even one sample per chip fits.
    if high - low <= max(unit, low // 16):
      return probes[low]
    # The line through the two probes nearest the boundary, aimed a little under the memory.
    if not failing:
      b0, b1 = sorted(fitting)[-2:]
    elif not fitting:
      b0, b1 = sorted(failing)[:2]
    else:
      b0, b1 = low, high
    m0, m1 = probes[b0].peak_bytes, probes[b1].peak_bytes
    capacity = 0.98 * probes[b0].hbm_bytes
    slope = (m1 - m0) / (b1 - b0) if math.isfinite(m0 + m1) else math.nan
    aim = b0 + (capacity - m0) / slope if slope > 0 else math.nan
    if not math.isfinite(aim):
      aim = low * 2 if not math.isfinite(high) else (low + high) / 2
    if math.isfinite(high):  # A line that aims near or past an end of the bracket: bisect.
      margin = (high - low) / 16
      if not low + margin <= aim <= high - margin:
        aim = (low + high) / 2
    else:
      aim = min(max(aim, low * 1.25), low * 16)
    batch = max(unit, int(aim) // unit * unit)
    if batch in probes:  # Rounding landed on a probe: step one unit inside the bracket.
      batch = low + unit
    probe(batch)


def _gib(value: float) -> str:
  return "-" if value is None or math.isnan(value) else f"{value / GIB:.2f} GiB"


def describe(plan: Plan) -> str:
  """The printed plan: the run, then per step the memory per chip and the roofline estimate."""
  run, architecture = plan.run, plan.run.model.architecture
  loss = run.loss.name + (f", blockwise (tiles of {run.loss.tile_size})" if run.loss.blockwise
                          else "")
  per_chip = run.global_batch_size // plan.chips
  micro_batches = (f" in {run.accumulation_steps} micro-batches of "
                   f"{per_chip // run.accumulation_steps:,}" if run.accumulation_steps > 1 else "")
  lines = [
      f"{run.model.name} | global batch {run.global_batch_size:,} "
      f"({per_chip:,} per chip{micro_batches}) | {plan.target}",
      f"mesh {' x '.join(f'{axis} {size}' for axis, size in plan.mesh.items())} | "
      f"loss {loss} | {architecture.dtype} | remat {'on' if architecture.remat else 'off'} | "
      f"scan {'on' if architecture.scan else 'off'}"
      + (f" | FLIP {run.flip.mask_ratio:g}" if run.flip.mask_ratio else ""),
  ]
  for step in plan.steps:
    if len(plan.steps) > 1:
      lines.append(f"-- FLIP mask ratio {step.mask_ratio:g} ({step.steps:,} steps)")
    capacity = f" of {_gib(plan.hbm_bytes)}" if plan.hbm_bytes else ""
    lines += [
        "per chip:",
        f"  parameters and optimiser state  {_gib(step.state_bytes)}",
        f"  batch                           {_gib(step.batch_bytes)}",
        f"  temporaries                     {_gib(step.temp_bytes)}",
        f"  total                           {_gib(step.total_bytes)}{capacity}",
        f"model FLOPs per step              {step.model_flops:.3e} "
        f"(with what the step recomputes {step.hardware_flops:.3e})",
    ]
    if step.out_of_memory or (plan.hbm_bytes and step.total_bytes > plan.hbm_bytes):
      over = (f"{_gib(step.total_bytes)} per chip, {_gib(step.total_bytes - plan.hbm_bytes)} "
              f"over its {_gib(plan.hbm_bytes)}")
      lines.append(f"DOES NOT FIT: {over}" + (f". The compiler: {step.out_of_memory}"
                                               if step.out_of_memory else ""))
    elif (roofline := plan.roofline(step)) is not None:
      seconds, bound = roofline
      mfu = step.model_flops / plan.chips / seconds / plan.chip.peak_bf16_flops
      lines.append(f"roofline step time                {seconds:.3f} s ({bound} bound, "
                   f"{run.global_batch_size / plan.chips / seconds:,.0f} samples/s per chip, "
                   f"MFU at most {mfu:.0%})")
  if plan.chip is not None:
    lines.append(f"chip: {plan.chip.source}")
  lines.append("fits" if plan.fits else "does not fit")
  return "\n".join(lines)


def target_devices(topology: str) -> tuple[list, str, float | None]:
  """(devices, their description, each one's memory if known): a TPU slice's compile-only devices,
  or this machine's."""
  import jax  # pylint: disable=g-import-not-at-top
  if topology:
    # An executable compiled for chips that are not here cannot be read back from JAX's
    # persistent compilation cache: writing it there would only cost time.
    jax.config.update("jax_enable_compilation_cache", False)
    devices = accelerators.topology_devices(topology)
    return devices, f"{topology} ({len(devices)} x {devices[0].device_kind})", None
  devices = jax.devices()
  stats = devices[0].memory_stats() or {}
  return (devices, f"this machine ({len(devices)} x {devices[0].device_kind})",
          stats.get("bytes_limit"))


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:  # JAX's INFO lines about absent backends: noise here.
    logging.set_verbosity(logging.WARNING)
  try:
    run = settings.parse(_CONFIG.value, require_data=False)  # A plan reads no data.
    devices, target, hbm_bytes = target_devices(_TOPOLOGY.value)
    if _HBM_GIB.value is not None:
      if _HBM_GIB.value <= 0:
        raise ValueError(f"--hbm_gib={_HBM_GIB.value:g}; allowed: a number of GiB above 0.")
      hbm_bytes = _HBM_GIB.value * GIB
  except ValueError as error:
    raise app.UsageError(str(error)) from None
  try:
    plan = (largest_batch if _MAX_BATCH.value else plan_run)(run, devices, target, hbm_bytes)
  except ValueError as error:  # A mesh or batch the devices cannot take, say.
    raise app.UsageError(str(error)) from None
  if _MAX_BATCH.value and plan.fits:
    print(f"Largest global batch that fits (to within 1/16): {plan.run.global_batch_size:,}")
  print(describe(plan))
  if not plan.fits:
    sys.exit(1)


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                            lock_config=True)
  _TOPOLOGY = flags.DEFINE_string(
      "topology", "", f"TPU slice to compile for: {accelerators.SLICE_EXAMPLES}. Default: this "
      "machine's devices.")
  _MAX_BATCH = flags.DEFINE_bool("max_batch", False,
                                 "Search for the largest global batch that fits.")
  _HBM_GIB = flags.DEFINE_float(
      "hbm_gib", None, "Plan against this many GiB per chip instead of the chip's memory "
      "(headroom for what the plan leaves out).")
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=settings.parse_flags)
