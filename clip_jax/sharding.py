"""Device mesh, partition rules and batch placement.

Models know nothing of meshes: this module alone decides where arrays live.

* The mesh has two axes, `data` and `fsdp`. The batch is split over both (every device holds
  `global_batch / num_devices` examples); parameters and optimiser state are split FSDP-style over
  `fsdp` (ZeRO-3: each device keeps a slice, XLA gathers them for the forward pass and
  reduce-scatters the gradients).
* The partition rule works on shapes alone, so a parameter and its Adam moments always get the same
  sharding: a leaf of at least `min_shard_size` elements is split along its largest dimension that
  `fsdp` divides; everything else (gains, biases, the temperature) is replicated.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from clip_jax import settings

MESH_AXES = ("data", "fsdp")
BATCH_AXES = MESH_AXES  # The batch is split over every mesh axis.


def create_mesh(mesh: settings.Mesh = settings.Mesh(), devices=None) -> Mesh:
  """Builds the ('data', 'fsdp') mesh; one axis may be -1 to take the remaining devices."""
  devices = jax.devices() if devices is None else devices
  sizes = {axis: getattr(mesh, axis) for axis in MESH_AXES}
  free_axes = [axis for axis, size in sizes.items() if size == -1]
  fixed = math.prod(size for size in sizes.values() if size != -1)
  if free_axes:
    if len(devices) % fixed:
      raise ValueError(
          f"mesh={sizes}: the fixed axes ({fixed} devices) do not divide the {len(devices)} "
          "devices.")
    sizes[free_axes[0]] = len(devices) // fixed
  if math.prod(sizes.values()) != len(devices):
    raise ValueError(
        f"mesh={sizes} needs {math.prod(sizes.values())} devices but {len(devices)} are available; "
        "set one axis to -1 to use all of them.")
  shape = tuple(sizes[axis] for axis in MESH_AXES)
  return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(shape),
                       devices=devices)


def check_batch_size(global_batch_size: int, mesh: Mesh, process_count: int = 1,
                     accumulation_steps: int = 1) -> None:
  """Every device and every process must get the same number of examples, in every micro-batch."""
  devices = mesh.devices.size
  multiple = math.lcm(devices * accumulation_steps, process_count)
  if global_batch_size <= 0 or global_batch_size % multiple:
    per_step = f" times accumulation_steps ({accumulation_steps})" if accumulation_steps > 1 else ""
    raise ValueError(
        f"global_batch_size={global_batch_size} must be a positive multiple of the number of "
        f"devices ({devices}){per_step} and processes ({process_count}); allowed: multiples of "
        f"{multiple}.")


def leaf_partition_spec(shape: tuple[int, ...], fsdp_size: int,
                        min_shard_size: int) -> PartitionSpec:
  """FSDP rule for one array: split its largest dimension that `fsdp` divides, if it is big
  enough."""
  if fsdp_size == 1 or math.prod(shape) < min_shard_size:
    return PartitionSpec()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return PartitionSpec(*spec)
  return PartitionSpec()


def tree_shardings(tree: Any, mesh: Mesh, min_shard_size: int = 2**14) -> Any:
  """NamedShardings for every leaf of a pytree of arrays or ShapeDtypeStructs."""
  fsdp_size = mesh.shape["fsdp"]
  return jax.tree.map(
      lambda leaf: NamedSharding(mesh, leaf_partition_spec(np.shape(leaf), fsdp_size,
                                                           min_shard_size)),
      tree)


def batch_shard_count(mesh: Mesh) -> int:
  """How many parts `batch_sharding` splits the batch into."""
  return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over all mesh axes."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def with_mesh(function: Callable, mesh: Mesh) -> Callable:
  """`function`, traced with `mesh` as the context mesh (its abstract form: it touches no device).

  For the code inside that splits its work over the mesh by hand: the Pallas attention kernel,
  which XLA does not partition, runs in `shard_map` over the context mesh
  (clip_jax.models.attention), and takes its platform from the mesh's devices.
  """
  @functools.wraps(function)
  def in_mesh(*args, **kwargs):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return function(*args, **kwargs)
  return in_mesh


def global_batch(host_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles the host-local numpy batches of all processes into globally sharded jax.Arrays."""
  sharding = batch_sharding(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, array)
          for name, array in host_batch.items()}
