"""The train step compiled by libtpu for TPU slices this machine does not have (clip_jax.plan):
every feature that changes the compiled program, the memory figures against the compiler's own,
the verdict on a run too big for its chips, and the largest-batch search."""

import dataclasses
import itertools
import math
import os
import re

import jax
import pytest

from clip_jax import accelerators
from clip_jax import plan
from clip_jax import program as program_lib
from clip_jax import settings
from clip_jax import sharding
import command_server
import config_files

GLOBAL_BATCH = 32


def tiny_run(model="tiny-vit", **changes) -> settings.Run:
  """The demo's run with a tiny model (32 px, 16 tokens); `changes` as flattened config keys."""
  config = config_files.load("synthetic_demo")
  config.model.name = model
  config.model.overrides = settings.default_config().model.overrides  # the demo's, undone
  config.global_batch_size = GLOBAL_BATCH
  config.total_steps = 10
  config.optim.warmup_steps = 2
  config.update_from_flattened_dict(changes)
  return settings.parse(config)


@pytest.mark.parametrize("slice_name, expected", [
    ("v5p-128", "v5p:4x4x4"), ("v5p-8", "v5p:2x2x1"), ("v4-32", "v4:2x2x4"),
    ("v4-4096", "v4:8x16x16"), ("v5e-16", "v5e:4x4"), ("v5litepod-32", "v5e:4x8"),
    ("v6e-256", "v6e:16x16"), ("v5e:2x4", "v5e:2x4")])
def test_cloud_tpu_slice_names_become_libtpu_topologies(slice_name, expected):
  assert accelerators.topology_name(slice_name)[1] == expected


@pytest.mark.parametrize("bad", ["v5p-7", "v5e-12", "v5e:2x2x2", "tpu-8", "v5p"])
def test_a_bad_slice_name_says_what_is_allowed(bad):
  with pytest.raises(ValueError, match="v5p-128"):
    accelerators.topology_name(bad)


def test_compile_only_devices_have_the_slices_chips_and_hosts():
  devices = accelerators.topology_devices("v5p-128")
  assert len(devices) == 64  # 128 TensorCores, two per chip: one megacore device per chip.
  assert len({device.process_index for device in devices}) == 16
  assert accelerators.chip_of(devices[0].device_kind).name == "v5p"
  assert accelerators.chip_of(accelerators.topology_devices("v5e-4")[0].device_kind).name == "v5e"


# Each case compiles the whole train step for TPU (about 20 s each on 2 cores), so each one
# combines several features: between them they cover both image towers, both losses (the sigmoid
# loss plain and blockwise, the softmax loss blockwise here and plain in the run too big for its
# chips below), data parallelism and FSDP, FLIP's two phases, remat, scan, bfloat16, gradient
# accumulation and the Pallas splash-attention kernel (in shard_map, at FLIP's odd lengths), on v4
# and v5e chips.
CASES = {
    "vit-softmax-blockwise-fsdp-flip-remat-scan-bf16-accumulation-splash": dict(
        slice_name="v5e-4", changes={
            "loss.blockwise": True, "loss.tile_size": 4, "mesh.data": 2, "mesh.fsdp": 2,
            "mesh.min_shard_size": 1, "flip.mask_ratio": 0.5, "flip.unmasked_steps": 2,
            "model.overrides.remat": True, "model.overrides.scan": True,
            "model.overrides.dtype": "bfloat16", "accumulation_steps": 2,
            "model.overrides.attention": "splash"}),
    "vit-sigmoid-data-parallel-float32": dict(
        slice_name="v4-8", changes={"loss.name": "sigmoid"}),
    "resnet-sigmoid-blockwise-fsdp-bf16": dict(
        slice_name="v5e-4", model="tiny-rn", changes={
            "loss.name": "sigmoid", "loss.blockwise": True, "loss.tile_size": 4,
            "mesh.data": 1, "mesh.fsdp": 4, "mesh.min_shard_size": 1,
            "model.overrides.dtype": "bfloat16"}),
}


@pytest.fixture(scope="module", params=list(CASES))
def compiled_plan(request):
  case = CASES[request.param]
  run = tiny_run(case.get("model", "tiny-vit"), **case["changes"])
  devices = accelerators.topology_devices(case["slice_name"])
  return plan.plan_run(run, devices, case["slice_name"])


def test_the_train_step_compiles_for_tpu_and_its_memory_adds_up(compiled_plan):
  run = compiled_plan.run
  assert compiled_plan.fits, plan.describe(compiled_plan)
  assert compiled_plan.chip.name in ("v4", "v5e", "v5p")
  phases = {step.mask_ratio: step.steps for step in compiled_plan.steps}
  if run.flip.mask_ratio:  # FLIP: the masked phase and the unmasked tuning phase, compiled apart.
    assert phases == {0.5: run.total_steps - 2, 0.0: 2}
    masked, unmasked = compiled_plan.steps
    assert masked.model_flops < unmasked.model_flops
  else:
    assert phases == {0.0: run.total_steps}
  per_chip, steps = GLOBAL_BATCH // compiled_plan.chips, run.accumulation_steps
  if steps > 1:
    assert (f"({per_chip} per chip in {steps} micro-batches of {per_chip // steps})"
            in plan.describe(compiled_plan))
  for step in compiled_plan.steps:
    # The batch per chip: uint8 images and int32 tokens of global_batch / chips samples.
    per_chip, size = GLOBAL_BATCH // compiled_plan.chips, run.data.image_size
    assert step.batch_bytes == per_chip * (size * size * 3 + run.data.context_length * 4)
    assert step.state_bytes < step.total_bytes < compiled_plan.hbm_bytes
    assert step.hardware_flops >= step.model_flops > 0
    if run.model.architecture.remat or run.accumulation_steps > 1:
      assert step.hardware_flops > step.model_flops


def test_fsdp_splits_the_state_over_the_chips():
  """Parameters and Adam moments per chip: a quarter under fsdp=4 (but what stays replicated)."""
  devices = accelerators.topology_devices("v5e-4")
  bytes_of = lambda **mesh: plan._shard_bytes(_abstract_state(
      tiny_run(**{f"mesh.{key}": value for key, value in mesh.items()}), devices))
  replicated, split = bytes_of(data=4, fsdp=1), bytes_of(data=1, fsdp=4, min_shard_size=1)
  assert replicated / 4 < split < replicated / 3


def _abstract_state(run, devices):
  mesh = sharding.create_mesh(run.mesh, devices)
  program = program_lib.make_program(run, mesh)
  return jax.tree.map(lambda leaf, where: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                                sharding=where),
                      program.abstract_state, program.state_shardings)


def test_state_bytes_per_device_match_a_real_state_on_this_machine():
  """The plan's accounting against the shards a real, initialised state has on 8 CPU devices."""
  run = tiny_run(**{"mesh.data": 2, "mesh.fsdp": 4, "mesh.min_shard_size": 1})
  devices = jax.devices()
  mesh = sharding.create_mesh(run.mesh, devices)
  program = program_lib.make_program(run, mesh)
  state = jax.jit(program.init, out_shardings=program.state_shardings)(jax.random.PRNGKey(0))
  on_device_0 = sum(shard.data.nbytes for leaf in jax.tree.leaves(state)
                    for shard in leaf.addressable_shards if shard.device == devices[0])
  assert plan._shard_bytes(_abstract_state(run, devices)) == on_device_0


def test_a_run_too_big_for_its_chips_exits_1_saying_by_how_much(tmp_path):
  """The compiler's own out-of-memory verdict, through the program as a user runs it on worker 0
  of a multi-host slice: with JAX_PLATFORMS=tpu on a machine without TPU chips, where starting
  the default backend fails (on a real slice it waits for every other host), so the plan must
  not start it."""
  result = command_server.run_python(
      ["-m", "clip_jax.plan", f"--config={config_files.path('synthetic_demo')}",
       "--topology=v5e-4", "--config.model.name=tiny-vit", "--config.global_batch_size=4096",
       "--config.model.overrides.vision.image_size=512",
       "--config.model.overrides.vision.patch_size=8"], cwd=tmp_path,
      env={**os.environ, "JAX_PLATFORMS": "tpu"})
  assert result.returncode == 1, result.stdout + result.stderr
  assert "DOES NOT FIT" in result.stdout and "exceeds available HBM" in result.stdout
  over = re.search(r"DOES NOT FIT: ([\d.]+) GiB per chip, ([\d.]+) GiB over its 16.00 GiB",
                   result.stdout)
  assert over and math.isclose(float(over[1]) - float(over[2]), 16.0, abs_tol=0.02)
  assert "global batch 4,096 (1,024 per chip) | v5e-4 (4 x TPU v5 lite)" in result.stdout


def test_the_largest_batch_search_finds_the_boundary(monkeypatch):
  """The search alone, against a stand-in for compiling: batches up to 3,000 fit, with memory
  growing along a line, or flat until it jumps over (the line then aims nowhere useful)."""
  probed = []
  memory = {"line": lambda batch: batch * 1.0,
            "cliff": lambda batch: 2990.0 + 100.0 * (batch > 3000)}
  curve = "line"

  def fake_plan(run, devices, target, hbm_bytes=None):
    probed.append(run.global_batch_size)
    total = memory[curve](run.global_batch_size)
    step = plan.StepPlan(mask_ratio=0.0, steps=1, state_bytes=0, batch_bytes=0, temp_bytes=0,
                         total_bytes=total, model_flops=1, hardware_flops=1, hbm_traffic=0)
    return plan.Plan(run=run, target=target, chips=len(devices), hosts=1, chip=None,
                     mesh={"data": len(devices), "fsdp": 1}, hbm_bytes=3000, steps=(step,))

  monkeypatch.setattr(plan, "plan_run", fake_plan)
  devices = jax.devices()  # 8: the batch moves in multiples of 8.
  for curve, start in itertools.product(memory, (64, 8192)):
    probed.clear()
    found = plan.largest_batch(tiny_run(global_batch_size=start), devices, "x").run
    assert found.global_batch_size % 8 == 0
    assert 3000 * 15 / 16 <= found.global_batch_size <= 3000, (curve, start, probed)
    assert len(probed) <= 12, (curve, start, probed)
  curve = "line"
  none_fit = dataclasses.replace(fake_plan(tiny_run(), devices, "x"), hbm_bytes=1)
  monkeypatch.setattr(plan, "plan_run", lambda run, *args: dataclasses.replace(none_fit, run=run))
  assert not plan.largest_batch(tiny_run(global_batch_size=64), devices, "x").fits


def test_roofline_estimate_is_bounded_by_compute_and_bandwidth():
  chip = accelerators.chip_of("TPU v5")
  step = plan.StepPlan(mask_ratio=0.0, steps=10, state_bytes=0, batch_bytes=0, temp_bytes=0,
                       total_bytes=1, model_flops=4 * 459e12, hardware_flops=8 * 459e12,
                       hbm_traffic=2765e9 * 0.5)
  estimate = plan.Plan(run=tiny_run(), target="x", chips=4, hosts=1, chip=chip,
                       mesh={"data": 4, "fsdp": 1}, hbm_bytes=chip.hbm_bytes, steps=(step,))
  assert math.isclose(estimate.step_seconds(step), 2.0)  # compute: 8/4 s > HBM: 0.5 s
  assert math.isclose(estimate.mfu(), 0.5)  # remat's recompute is not model FLOPs
  assert math.isclose(estimate.samples_per_second_per_chip(), GLOBAL_BATCH / 2.0 / 4)


def test_the_roofline_counts_scanned_blocks_as_often_as_they_run():
  """XLA counts a scanned loop's body once: the plan's HBM traffic for scanned blocks is the
  unrolled step's (XLA's exact count), within what fusing differently across blocks changes."""
  depths = {"model.overrides.vision.layers": 3, "model.overrides.text.layers": 3}
  devices = jax.devices()[:2]
  unrolled = plan.plan_run(tiny_run(**depths), devices, "cpu").steps[0].hbm_traffic
  scanned_run = tiny_run(**depths, **{"model.overrides.scan": True})
  scanned = plan.plan_run(scanned_run, devices, "cpu").steps[0].hbm_traffic
  assert scanned == pytest.approx(unrolled, rel=0.05)
  mesh = sharding.create_mesh(scanned_run.mesh, devices)
  size, length = scanned_run.data.image_size, scanned_run.data.context_length
  batch = {name: jax.ShapeDtypeStruct((GLOBAL_BATCH, *shape), dtype,
                                      sharding=sharding.batch_sharding(mesh))
           for name, shape, dtype in (("image", (size, size, 3), "uint8"),
                                      ("text", (length,), "int32"))}
  compiled = program_lib.make_program(scanned_run, mesh).step_function(0.0).lower(
      _abstract_state(scanned_run, devices), batch).compile()
  assert plan._bytes_accessed(compiled) < 0.8 * unrolled  # XLA's own count of the scanned step
