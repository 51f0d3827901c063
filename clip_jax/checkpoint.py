"""Orbax checkpoints of the whole run: train state (parameters, optimiser state, step, RNG) and the
input pipeline's position, so that a restarted run continues with the very next batch.

Restoring takes an abstract target whose leaves carry shardings; Orbax reads each shard straight
into place, so a checkpoint written on one mesh restores onto any other (8 devices -> 4 or 1).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def create_manager(workdir: str, checkpoint_config) -> ocp.CheckpointManager:
  """Asynchronous manager keeping the last `checkpoint.max_to_keep` checkpoints under workdir."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=checkpoint_config.max_to_keep,
      enable_async_checkpointing=checkpoint_config.get("async_save", True),
      create=True)
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  return ocp.CheckpointManager(directory, options=options, item_names=("state", "data"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict,
         force: bool = False) -> None:
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             data=ocp.args.JsonSave(data_state)), force=force)


def abstract_like(state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings: what `restore` reads into."""
  return jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                                  sharding=sharding),
                      state, shardings)


def restore(manager: ocp.CheckpointManager, abstract_state: Any,
            step: int | None = None) -> tuple[Any, dict, int]:
  """Restores (state, data_state, step), by default from the latest checkpoint."""
  step = manager.latest_step() if step is None else step
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
  return restored["state"], restored["data"], step
