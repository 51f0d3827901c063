"""Mesh construction, the FSDP partition rule and batch assembly, on 8 CPU devices."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from clip_jax import settings
from clip_jax import sharding


def mesh_config(**axes):
  return settings.Mesh(**axes)


@pytest.mark.parametrize("axes, shape", [
    (dict(data=-1, fsdp=1), (8, 1)),
    (dict(data=2, fsdp=-1), (2, 4)),
    (dict(data=1, fsdp=8), (1, 8)),
])
def test_create_mesh_shapes(axes, shape):
  mesh = sharding.create_mesh(mesh_config(**axes))
  assert tuple(mesh.shape.values()) == shape
  assert mesh.axis_names == sharding.MESH_AXES


@pytest.mark.parametrize("axes, message", [
    (dict(data=3, fsdp=1), "needs 3 devices"),
    (dict(data=-1, fsdp=3), "do not divide"),
])
def test_create_mesh_errors(axes, message):
  with pytest.raises(ValueError, match=message):
    sharding.create_mesh(mesh_config(**axes))


def test_check_batch_size_names_key_and_allowed_values():
  mesh = sharding.create_mesh(mesh_config(data=-1, fsdp=1))
  sharding.check_batch_size(64, mesh)
  with pytest.raises(ValueError, match=r"global_batch_size=12 .* multiples of 8"):
    sharding.check_batch_size(12, mesh)


def test_partition_rule_splits_largest_divisible_dimension():
  spec = sharding.leaf_partition_spec
  assert spec((512, 2048), fsdp_size=4, min_shard_size=1024) == PartitionSpec(None, "fsdp")
  assert (spec((12, 768, 3072), fsdp_size=4, min_shard_size=1024)
          == PartitionSpec(None, None, "fsdp"))
  assert spec((6, 1000, 7), fsdp_size=8, min_shard_size=1) == PartitionSpec(None, "fsdp", None)
  assert spec((7, 9), fsdp_size=2, min_shard_size=1) == PartitionSpec()  # nothing divisible
  assert spec((768,), fsdp_size=4, min_shard_size=1024) == PartitionSpec()  # too small
  assert spec((512, 2048), fsdp_size=1, min_shard_size=1) == PartitionSpec()


def test_tree_shardings_shards_parameters_and_moments_alike():
  mesh = sharding.create_mesh(mesh_config(data=2, fsdp=4))
  params = {"kernel": np.zeros((256, 64), np.float32), "bias": np.zeros((64,), np.float32)}
  moments = {"mu": params, "nu": params}
  param_shardings = sharding.tree_shardings(params, mesh, min_shard_size=1024)
  moment_shardings = sharding.tree_shardings(moments, mesh, min_shard_size=1024)
  assert param_shardings["kernel"].spec == PartitionSpec("fsdp", None)
  assert param_shardings["bias"].spec == PartitionSpec()
  assert moment_shardings["mu"] == param_shardings == moment_shardings["nu"]
  placed = jax.device_put(params["kernel"], param_shardings["kernel"])
  assert placed.addressable_shards[0].data.shape == (64, 64)


def test_global_batch_splits_examples_over_all_devices():
  mesh = sharding.create_mesh(mesh_config(data=2, fsdp=4))
  host_batch = {"image": np.arange(16 * 3, dtype=np.float32).reshape(16, 3),
                "text": np.arange(16 * 5, dtype=np.int32).reshape(16, 5)}
  batch = sharding.global_batch(host_batch, mesh)
  assert batch["image"].shape == (16, 3)
  assert {shard.data.shape for shard in batch["text"].addressable_shards} == {(2, 5)}
  np.testing.assert_array_equal(np.asarray(batch["image"]), host_batch["image"])
