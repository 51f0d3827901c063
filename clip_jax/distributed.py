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

from clip_jax import config_sections

MODES = ("off", "auto", "explicit")
# The keys besides `mode`, unset: mode "auto" leaves an unset key to JAX's detection.
UNSET = dict(coordinator_address="", num_processes=0, process_id=-1, local_device_ids=())
ALLOWED = dict(coordinator_address="'host:port' of process 0", num_processes="integers >= 1",
               process_id="integers from 0 to num_processes - 1",
               local_device_ids="a tuple of this host's device ids, () for all")
EXPLICIT_KEYS = ("coordinator_address", "num_processes", "process_id")


def initialize(config) -> None:
  """Calls `jax.distributed.initialize` as `config.distributed` asks (nothing for mode "off").

  Must run once per process, before any JAX computation: `train.main` calls it, not
  `train_and_evaluate`, which tests and notebooks call in-process on their local devices.
  """
  arguments = initialize_arguments(config.get("distributed"))
  if arguments is not None:
    jax.distributed.initialize(**arguments)


def initialize_arguments(distributed_config) -> dict[str, Any] | None:
  """The keyword arguments of `jax.distributed.initialize`, or None for a single process.

  A bad value raises a ValueError naming the key, the value and what is allowed.
  """
  settings = read_config(distributed_config)
  given = {key: settings[key] for key in UNSET if settings[key] != UNSET[key]}
  if settings["mode"] == "off":
    if given:
      key = next(iter(given))
      raise ValueError(f"distributed.{key}={given[key]!r} with distributed.mode='off'; allowed: "
                       f"{UNSET[key]!r}, or distributed.mode 'auto' or 'explicit'.")
    return None
  if settings["mode"] == "explicit":
    missing = [key for key in EXPLICIT_KEYS if key not in given]
    if missing:
      raise ValueError(f"distributed.{missing[0]} is unset, and distributed.mode='explicit' "
                       f"needs it; allowed: {ALLOWED[missing[0]]}.")
    given["cluster_detection_method"] = "deactivate"
  if "local_device_ids" in given:
    given["local_device_ids"] = list(given["local_device_ids"])
  return given


def read_config(distributed_config) -> dict[str, Any]:
  """The config over the defaults (mode "off", every key unset), each value checked."""
  settings = config_sections.read_section("distributed", distributed_config,
                                          {"mode": "off", **UNSET})
  if settings["mode"] not in MODES:
    raise ValueError(f"distributed.mode={settings['mode']!r}; allowed: {', '.join(MODES)}.")
  num_processes = settings["num_processes"]
  rules = {
      "coordinator_address": lambda value: value == "" or _is_address(value),
      "num_processes": lambda value: config_sections.is_count(value) and value >= 0,
      "process_id": lambda value: value == -1 or (config_sections.is_count(value) and value >= 0 and (
          num_processes == 0 or value < num_processes)),
      "local_device_ids": lambda value: isinstance(value, (tuple, list)) and all(
          config_sections.is_count(device_id) and device_id >= 0 for device_id in value),
  }
  for key, is_valid in rules.items():
    if not is_valid(settings[key]):
      raise ValueError(f"distributed.{key}={settings[key]!r}; allowed: {ALLOWED[key]}.")
  return settings


def _is_address(value: Any) -> bool:
  host, _, port = str(value).rpartition(":")
  return bool(host) and port.isdigit()


def gather_int64(values) -> np.ndarray:
  """Every process's `values` (as many everywhere), stacked by process index: [processes, n].

  A collective: all processes call it. The values travel as bytes, because `process_allgather`
  passes them through the devices, where int64 becomes int32 (unless jax_enable_x64), and data
  positions pass 2**31 (byte offsets in shards over 2 GiB, samples of a long run).
  """
  vector = np.asarray(values, np.int64)
  return multihost_utils.process_allgather(vector.view(np.uint8)).view(np.int64)
