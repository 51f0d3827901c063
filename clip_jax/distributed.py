"""Multi-process runs: joining the processes (`jax.distributed.initialize`, as
`config.distributed` asks) and gathering host values across them.

A run on one host needs nothing (`mode="off"`). A run over several hosts starts the same command
once per host (or once per GPU); before anything touches a device, the processes must find each
other, or each trains alone on its own devices. Two ways to tell them who they are:

  mode="auto"       JAX reads it from the cluster: the TPU VM's metadata on a pod slice, SLURM's
                    variables (SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID,
                    SLURM_LOCALID) or Open MPI's; keys set in the config take precedence.
  mode="explicit"   coordinator_address ("host:port" of process 0), num_processes and process_id
                    say it all (local_device_ids optionally); nothing is detected.

On CPU the processes' collectives go through gloo over TCP: JAX's default
(`jax_cpu_collectives_implementation`) in the versions setup.cfg allows, so nothing to select.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

from clip_jax import settings


def initialize(distributed: settings.Distributed) -> None:
  """Calls `jax.distributed.initialize` as `config.distributed` asks (nothing for mode "off").

  Must run once per process, before any JAX computation: `train.main` calls it, not
  `train_and_evaluate`, which tests and notebooks call in-process on their local devices.
  """
  arguments = initialize_arguments(distributed)
  if arguments is not None:
    jax.distributed.initialize(**arguments)


def initialize_arguments(distributed: settings.Distributed) -> dict[str, Any] | None:
  """The keyword arguments of `jax.distributed.initialize`, or None for a single process.

  Only the keys that are set are passed: mode "auto" leaves the others to JAX's detection
  (`settings.parse` has checked that mode "explicit" sets all of them).
  """
  if distributed.mode == "off":
    return None
  arguments = settings.distributed_keys_set(distributed)
  if distributed.mode == "explicit":
    arguments["cluster_detection_method"] = "deactivate"
  if "local_device_ids" in arguments:
    arguments["local_device_ids"] = list(arguments["local_device_ids"])
  return arguments


def gather_int64(values) -> np.ndarray:
  """Every process's `values` (as many everywhere), stacked by process index: [processes, n].

  A collective: all processes call it. The values travel as bytes, because `process_allgather`
  passes them through the devices, where int64 becomes int32 (unless jax_enable_x64), and data
  positions pass 2**31 (byte offsets in shards over 2 GiB, samples of a long run).
  """
  vector = np.asarray(values, np.int64)
  return multihost_utils.process_allgather(vector.view(np.uint8)).view(np.int64)
