"""TPU and GPU chips: their peak figures, TPU slice names, and TPU topologies to compile for.

clip_jax.plan compiles a run's train step for a TPU slice on any machine (libtpu compiles for a
topology without its chips) and estimates its speed from the figures below.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import re

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One chip's published peak figures (a TPU v4 or v5p chip's two TensorCores count as one
  device, megacore)."""
  name: str
  device_kinds: tuple[str, ...]  # jax's Device.device_kind of this chip.
  hbm_bytes: float
  peak_bf16_flops: float  # dense bfloat16 matmul FLOP/s
  hbm_bytes_per_s: float
  source: str


# Each figure is the vendor's, from the page named in `source`.
CHIPS = (
    Chip("v4", ("TPU v4",), 32 * GIB, 275e12, 1228e9,
         "cloud.google.com/tpu/docs/v4: 275 TFLOP/s bf16, 32 GiB HBM2, 1,228 GB/s"),
    Chip("v5e", ("TPU v5 lite", "TPU v5e"), 16 * GIB, 197e12, 819e9,
         "cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16, 16 GiB HBM2, 819 GB/s"),
    Chip("v5p", ("TPU v5", "TPU v5p"), 95 * GIB, 459e12, 2765e9,
         "cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16, 95 GiB HBM2e, 2,765 GB/s"),
    Chip("v6e", ("TPU v6 lite", "TPU v6e"), 32 * GIB, 918e12, 1640e9,
         "cloud.google.com/tpu/docs/v6e: 918 TFLOP/s bf16, 32 GiB HBM, 1,640 GB/s"),
    # NVIDIA's cards of one name differ by form factor (SXM, PCIe, NVL): each has its own
    # device kind and peak, and a kind not listed here gets no peak rather than another card's.
    Chip("H200", ("NVIDIA H200",), 141e9, 989e12, 4.8e12,
         "nvidia.com H200 datasheet (SXM): 989 TFLOP/s dense bf16, 141 GB HBM3e, 4.8 TB/s"),
    Chip("H200-NVL", ("NVIDIA H200 NVL",), 141e9, 835e12, 4.8e12,
         "nvidia.com H200 datasheet (NVL): 835 TFLOP/s dense bf16, 141 GB HBM3e, 4.8 TB/s"),
    Chip("H100", ("NVIDIA H100 80GB HBM3",), 80e9, 989e12, 3.35e12,
         "nvidia.com H100 datasheet (SXM): 989 TFLOP/s dense bf16, 80 GB HBM3, 3.35 TB/s"),
    Chip("H100-PCIe", ("NVIDIA H100 PCIe",), 80e9, 756e12, 2.0e12,
         "nvidia.com H100 datasheet (PCIe): 756 TFLOP/s dense bf16, 80 GB HBM2e, 2.0 TB/s"),
    Chip("H100-NVL", ("NVIDIA H100 NVL",), 94e9, 835e12, 3.9e12,
         "nvidia.com H100 datasheet (NVL): 835 TFLOP/s dense bf16, 94 GB HBM3, 3.9 TB/s"),
    Chip("A100-80GB", ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB"), 80e9, 312e12, 2.039e12,
         "nvidia.com A100 datasheet (SXM 80GB): 312 TFLOP/s dense bf16, 2,039 GB/s"),
    Chip("A100-40GB", ("NVIDIA A100-SXM4-40GB", "NVIDIA A100"), 40e9, 312e12, 1.555e12,
         "nvidia.com A100 datasheet (SXM 40GB): 312 TFLOP/s dense bf16, 1,555 GB/s"),
)


def chip_of(device_kind: str) -> Chip | None:
  """The chip whose device kind `device_kind` is (the longest name that starts it: "NVIDIA H200
  NVL" is not an "NVIDIA H200"), or None."""
  matches = [(len(kind), chip) for chip in CHIPS for kind in chip.device_kinds
             if device_kind.startswith(kind)]
  return max(matches, key=lambda match: match[0])[1] if matches else None


# Slice names as Cloud TPU writes them: v4 and v5p count TensorCores (two per chip), v5e and v6e
# count chips. libtpu names topologies by chip grid: v4 and v5p a 3-D torus, v5e and v6e 2-D.
_SLICE = re.compile(r"^(v4|v5p|v5e|v5litepod|v6e)-(\d+)$")
_TOPOLOGY = re.compile(r"^(v4|v5p|v5e|v6e):(\d+(?:x\d+){1,2})$")
_CORES_PER_CHIP = {"v4": 2, "v5p": 2, "v5e": 1, "v6e": 1}
_GRID_RANK = {"v4": 3, "v5p": 3, "v5e": 2, "v6e": 2}
SLICE_EXAMPLES = "v5p-128, v4-32, v5e-16, v6e-256, or a chip grid such as v5e:4x4 or v5p:4x4x4"


def _chip_grid(chips: int, rank: int) -> list[int]:
  """Cloud TPU's slice shapes: from 2x2(x1), each doubling doubles the last of the smallest
  sides (v5p-128: 64 chips, 4x4x4; v5e-32: 4x8)."""
  grid = [2, 2, 1] if rank == 3 else [1, 1]
  while math.prod(grid) < chips:
    smallest = min(grid)
    last = max(i for i, side in enumerate(grid) if side == smallest)
    grid[last] *= 2
  return grid


def topology_name(slice_name: str) -> tuple[str, str]:
  """(chip generation, libtpu topology name) of "v5p-128" (a slice) or "v5p:4x4x4" (a grid)."""
  if match := _TOPOLOGY.match(slice_name):
    generation, grid = match.groups()
    if len(grid.split("x")) != _GRID_RANK[generation]:
      raise ValueError(f"--topology={slice_name!r}: a {generation} grid has "
                       f"{_GRID_RANK[generation]} sides; for example {SLICE_EXAMPLES}.")
    return generation, slice_name
  if match := _SLICE.match(slice_name):
    generation, cores = match.group(1).replace("v5litepod", "v5e"), int(match.group(2))
    chips, rest = divmod(cores, _CORES_PER_CHIP[generation])
    grid = _chip_grid(chips, _GRID_RANK[generation])
    if rest or chips < 1 or math.prod(grid) != chips:
      raise ValueError(f"--topology={slice_name!r} is not a {generation} slice size; "
                       f"for example {SLICE_EXAMPLES}.")
    return generation, f"{generation}:{'x'.join(map(str, grid))}"
  raise ValueError(f"--topology={slice_name!r}; allowed: {SLICE_EXAMPLES}.")


# Google's PCI vendor ID, and the device IDs of its TPU chips (JAX's table, jax/_src/
# hardware_utils.py: v3, an unnamed one, v4, v5p, v5e, v6e, TPU7x). The vendor alone also
# matches Google Cloud's virtual NIC (gVNIC, device 0x0042) on every Compute Engine VM.
GOOGLE_PCI_VENDOR = "0x1ae0"
TPU_PCI_DEVICES = frozenset({"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f",
                             "0x0076"})


def has_tpu_chips(pci_devices: str = "/sys/bus/pci/devices") -> bool:
  """Whether this machine has Google TPU chips: a PCI device of Google's with a TPU's device ID,
  as JAX looks for them."""
  for directory in glob.glob(os.path.join(pci_devices, "*")):
    try:
      with open(os.path.join(directory, "vendor")) as vendor, \
          open(os.path.join(directory, "device")) as device:
        if (vendor.read().strip() == GOOGLE_PCI_VENDOR
            and device.read().strip() in TPU_PCI_DEVICES):
          return True
    except OSError:
      continue
  return False


def libtpu_as_compiler_only() -> None:
  """Lets libtpu start quietly, as the compiler clip_jax.plan uses, on a machine without TPUs.

  Where libtpu is installed (the `tpu` and `test` extras), JAX starts it even on a machine with no
  TPU chips; libtpu then prints errors for not finding a TPU VM's metadata, and takes a lock
  that makes every other process using it fail. Naming a single-host slice keeps it quiet (it
  still compiles for whatever topology the plan asks), and with no chips to share the lock is
  not needed. A TPU VM, or an environment that sets these itself, is left alone. Must run before
  JAX starts its backends.
  """
  if has_tpu_chips() or "TPU_ACCELERATOR_TYPE" in os.environ:
    return
  for name, value in (("TPU_ACCELERATOR_TYPE", "v5litepod-1"), ("TPU_SKIP_MDS_QUERY", "1"),
                      ("TPU_WORKER_HOSTNAMES", "localhost"), ("TPU_WORKER_ID", "0"),
                      ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")):
    os.environ.setdefault(name, value)


def topology_devices(slice_name: str) -> list:
  """Compile-only devices of a TPU slice (one per chip: v4 and v5p as megacore)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  generation, name = topology_name(slice_name)
  options = {"chip_config_name": "megacore"} if _CORES_PER_CHIP[generation] == 2 else {}
  return list(topologies.get_topology_desc(topology_name=name, platform="tpu", **options).devices)
