"""Orbax checkpoints of the whole run: train state (parameters, optimiser state, step, RNG) and the
input pipeline's position, so that a restarted run continues with the very next batch.

Restoring takes an abstract target whose leaves carry shardings; Orbax reads each shard straight
into place, so a checkpoint written on one mesh restores onto any other (8 devices -> 4 or 1).
"""

from __future__ import annotations

from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from clip_jax import files
from clip_jax import settings

DIRECTORY = "checkpoints"  # in the workdir, a folder per checkpointed step


def create_manager(workdir: str, checkpoint: settings.Checkpoint = settings.Checkpoint(), *,
                   writer: bool = False) -> ocp.CheckpointManager:
  """Asynchronous manager keeping the last `checkpoint.max_to_keep` checkpoints under workdir.
  The run that writes the workdir (`writer`, holding its lock) removes the temporary folders of
  saves that were interrupted; a reader must not, as they may be a running save's."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=checkpoint.max_to_keep, enable_async_checkpointing=checkpoint.async_save,
      create=True, cleanup_tmp_directories=writer)
  return ocp.CheckpointManager(files.path(workdir) / DIRECTORY, options=options,
                               item_names=("state", "data"))


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


def saved_steps(workdir: str) -> list[int]:
  """The steps of the checkpoints in a training workdir (orbax names their folders by step)."""
  directory = files.path(workdir) / DIRECTORY
  if not directory.is_dir():
    return []
  return sorted(int(entry.name) for entry in directory.iterdir() if entry.name.isdigit())


UNRESTORABLE_SUFFIX = ".unrestorable"


def restore_newest(manager: ocp.CheckpointManager, abstract_state: Any) -> tuple[Any, dict, int]:
  """`restore` of the newest checkpoint that restores: one that cannot (damaged, half-copied) is
  logged with its path and error and the one before it tried, down to the oldest kept. The ones
  that did not restore are kept beside the others, renamed `<step>.unrestorable`, so that the run
  saves those steps anew."""
  failures = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = restore(manager, abstract_state, step)
    except Exception as error:  # pylint: disable=broad-except  # Orbax raises many kinds
      path = manager.directory / str(step)
      message = f"{type(error).__name__}: {(str(error).strip() or '?').splitlines()[0]}"
      logging.error("The checkpoint %s does not restore (%s); trying the one before it.", path,
                    message)
      failures.append((step, message))
      continue
    if failures:
      if jax.process_index() == 0:
        for failed, _ in failures:
          (manager.directory / str(failed)).rename(
              manager.directory / f"{failed}{UNRESTORABLE_SUFFIX}")
      multihost_utils.sync_global_devices("clip_jax: unrestorable checkpoints set aside")
      manager.reload()
    return restored
  raise ValueError(f"No checkpoint in {manager.directory} restores ("
                   f"{'; '.join(f'step {step}: {message}' for step, message in failures)}): "
                   "move the damaged ones away to start again from the last good one, or use "
                   "a new workdir.")


def on_host(tree: Any) -> Any:
  """Abstract arrays of `tree`'s shapes and dtypes in this host's memory, on one device: a
  restore's target on any host and any number of processes (the saved shardings name the devices
  of the process that saved)."""
  host = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=host),
                      tree)


def restore_variables(workdir: str, step: int | None = None,
                      use_ema: bool = False) -> tuple[dict[str, Any], int]:
  """The model variables (numpy; params and, for a ResNet, batch_stats) of a workdir's checkpoint,
  by default the latest, and its step: what evaluation and `clip_jax.load` need, on any host,
  whatever mesh the run had. Only those parts are read (not the optimiser state), each into this
  host's memory. With `use_ema`, the parameters' moving average (a run with `ema_decay` > 0) in
  place of the parameters."""
  manager = create_manager(workdir)
  try:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{workdir} has no checkpoint yet.")
    with ocp.StandardCheckpointer() as checkpointer:
      stored = checkpointer.metadata(manager.directory / str(step) / "state").item_metadata.tree
    params_key = "ema_params" if use_ema else "params"
    if not stored.get(params_key):
      raise ValueError(f"use_ema=True, but {workdir} keeps no moving average of its parameters "
                       "(its run had ema_decay=0); allowed: use_ema=False.")
    wanted = {key: stored[key] for key in (params_key, "batch_stats") if stored.get(key)}
    target = on_host(wanted)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=jax.tree.map(
            lambda leaf: ocp.ArrayRestoreArgs(restore_type=np.ndarray, sharding=leaf.sharding),
            target),
        partial_restore=True)))["state"]
  finally:
    manager.close()
  variables = {"params": restored[params_key]}
  if "batch_stats" in restored:
    variables["batch_stats"] = restored["batch_stats"]
  return jax.tree.map(np.asarray, variables), step
