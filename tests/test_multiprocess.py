"""Multi-process training on one machine: 2 processes of 4 CPU devices each, joined by
`jax.distributed` on localhost (gloo collectives), train like one process with all 8 devices,
and a SIGTERM to one of them stops both at one checkpoint, from which they resume exactly.

The mesh is pure FSDP (`mesh.fsdp=-1`), so that the larger parameters are split across the two
processes: the step gathers them and scatters their gradients between processes, and each
process writes and reads its own shards of the checkpoint. Each step runs in two micro-batches
(`accumulation_steps=2`), whose features and gradients cross the processes too.
"""

import json
import os
import pathlib
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from clip_jax import distributed
from clip_jax import settings
from clip_jax import train
import command_server
import tiny_runs
from xla_flags import xla_flags

NUM_PROCESSES = 2
# The tiny run (tests/tiny_runs.py) in 4 steps of two accumulated micro-batches, parameters
# sharded over every device of every process.
CHANGES = {"total_steps": 4, "mesh.data": 1, "mesh.fsdp": -1, "accumulation_steps": 2}
TOTAL_STEPS = CHANGES["total_steps"]
PROCESS_TIMEOUT_SECONDS = 240


def tiny_config():
  return tiny_runs.tiny_config(**CHANGES)


@pytest.fixture(scope="module")
def environment():
  """4 CPU devices per process (and the suite's compilation cache, see conftest.py)."""
  return {**os.environ, "XLA_FLAGS": xla_flags(4), "JAX_PLATFORMS": "cpu"}


def training_commands(workdir: str) -> list[list[str]]:
  """`python -m clip_jax.train` for each process (the interpreter's arguments), joined by an
  explicit coordinator."""
  config_file = tiny_runs.write_tiny_config_file(pathlib.Path(f"{workdir}.config.py"))
  command = ["-m", "clip_jax.train", f"--config={config_file}",
             f"--workdir={workdir}", "--config.distributed.mode=explicit",
             f"--config.distributed.coordinator_address=localhost:{tiny_runs.free_port()}",
             f"--config.distributed.num_processes={NUM_PROCESSES}",
             *[f"--config.{key}={value}" for key, value in CHANGES.items()]]
  return [[*command, f"--config.distributed.process_id={process_id}"]
          for process_id in range(NUM_PROCESSES)]


def start_processes(commands: list[list[str]], log_base: str,
                    environment: dict[str, str]) -> list[command_server.ServedProcess]:
  """One Python process per command (the interpreter's arguments), through the command server;
  their output goes to `log_path(log_base, process_id)`."""
  return [command_server.start(command, stdout=log_path(log_base, process_id), env=environment)
          for process_id, command in enumerate(commands)]


def log_path(log_base: str, process_id: int) -> str:
  return f"{log_base}.process{process_id}.log"


def output(log_base: str, process_id: int) -> str:
  with open(log_path(log_base, process_id)) as log:
    return log.read()


def logs(log_base: str) -> str:
  """The end of every process's output, for failure messages."""
  return "\n".join(f"--- process {process_id}:\n{output(log_base, process_id)[-3000:]}"
                   for process_id in range(NUM_PROCESSES))


def stop(processes: list[command_server.ServedProcess], log_base: str, why: str) -> None:
  for process in processes:
    process.kill()
    process.wait()
  pytest.fail(f"{why}\n{logs(log_base)}")


def wait_for(processes: list[command_server.ServedProcess], log_base: str,
             status: int = 0) -> None:
  """Waits for every process to exit with `status`; kills them all if one hangs."""
  deadline = time.time() + PROCESS_TIMEOUT_SECONDS
  try:
    for process in processes:
      process.wait(timeout=max(deadline - time.time(), 1))
  except subprocess.TimeoutExpired:
    stop(processes, log_base, f"The processes did not finish in {PROCESS_TIMEOUT_SECONDS} s.")
  returncodes = [process.returncode for process in processes]
  assert returncodes == [status] * NUM_PROCESSES, logs(log_base)


def train_in_processes(workdir: str, environment: dict[str, str]) -> None:
  wait_for(start_processes(training_commands(workdir), workdir, environment), workdir)


def saved_steps(workdir: str) -> list[int]:
  return sorted(int(name) for name in os.listdir(os.path.join(workdir, "checkpoints"))
                if name.isdigit())


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, environment):
  workdir = str(tmp_path_factory.mktemp("processes") / "run")
  train_in_processes(workdir, environment)
  return workdir


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
  """The reference: the same run in this process, on its 8 devices."""
  workdir = str(tmp_path_factory.mktemp("one_process"))
  train.train_and_evaluate(tiny_config(), workdir)
  return workdir


def test_two_processes_of_four_devices_train_as_one_process_of_eight(two_process_run,
                                                                     one_process_run):
  config = tiny_config()
  losses = tiny_runs.losses_by_step(two_process_run)
  reference_losses = tiny_runs.losses_by_step(one_process_run)
  assert sorted(losses) == list(range(1, TOTAL_STEPS + 1))
  # Not bit-identical: gloo sums the processes' partial gradients in another order than XLA does
  # within one process (measured: losses within 1e-7 relative).
  np.testing.assert_allclose([losses[step] for step in sorted(losses)],
                             [reference_losses[step] for step in sorted(losses)], rtol=1e-6)
  params, data_state, step = tiny_runs.restore_params(two_process_run, config, jax.devices())
  reference, reference_data_state, _ = tiny_runs.restore_params(one_process_run, config,
                                                                jax.devices())
  assert step == TOTAL_STEPS and saved_steps(two_process_run) == [2, 4]
  # Each process rendered its half of every global batch: both stand where the one process does.
  positions = [process["position"] for process in data_state["processes"]]
  assert positions == [reference_data_state["processes"][0]["position"]] * NUM_PROCESSES
  # Measured: within 6e-8 of each other, but for the attention's key biases (6e-7), whose
  # gradient is rounding noise (softmax ignores a key bias) that Adam scales up to steps of lr.
  for name, value in tiny_runs.flat_params(reference).items():
    np.testing.assert_allclose(tiny_runs.flat_params(params)[name], value, rtol=1e-5, atol=1e-6,
                               err_msg=name)


def test_only_process_zero_logs_evaluates_and_plots(two_process_run):
  records = [json.loads(line) for line in open(os.path.join(two_process_run, "metrics.jsonl"))]
  assert ([record["step"] for record in records if "loss" in record]
          == list(range(1, TOTAL_STEPS + 1)))
  assert [record["step"] for record in records if "zero_shot/shape_top1_seen" in record] == [4]
  assert os.path.getsize(os.path.join(two_process_run, "training_curves.png")) > 1000
  process_outputs = [output(two_process_run, process_id) for process_id in range(NUM_PROCESSES)]
  assert f"step {TOTAL_STEPS}/{TOTAL_STEPS} | loss" in process_outputs[0]
  assert "zero-shot top-1" in process_outputs[0]
  assert not any(line in process_outputs[1] for line in ("| loss", "zero-shot", "Training curves"))


def test_sigterm_to_one_process_stops_both_at_one_checkpoint_then_they_resume_exactly(
    two_process_run, environment, tmp_path):
  workdir = str(tmp_path / "run")
  processes = start_processes(training_commands(workdir), workdir, environment)
  deadline = time.time() + PROCESS_TIMEOUT_SECONDS
  # Process 0 writes the run's config once jax.distributed is up (and with it JAX's SIGTERM
  # listener), seconds before the first step is compiled.
  while not os.path.exists(os.path.join(workdir, "config.json")):
    if time.time() > deadline or any(process.poll() is not None for process in processes):
      stop(processes, workdir, "Process 0 never started training.")
    time.sleep(0.1)
  processes[0].send_signal(signal.SIGTERM)
  wait_for(processes, workdir, train.PREEMPTED_EXIT_STATUS)
  stopped_at = max(tiny_runs.losses_by_step(workdir))
  assert stopped_at < TOTAL_STEPS - 1 and saved_steps(workdir)[-1] == stopped_at, logs(workdir)
  assert not os.path.exists(os.path.join(workdir, "training_curves.png"))

  # Again, to the other process, while the resumed run starts: before its first step.
  processes = start_processes(training_commands(workdir), workdir, environment)
  deadline = time.time() + PROCESS_TIMEOUT_SECONDS
  while f"Resumed from the checkpoint of step {stopped_at}" not in output(workdir, 0):
    if time.time() > deadline or any(process.poll() is not None for process in processes):
      stop(processes, workdir, "Process 0 never resumed.")
    time.sleep(0.1)
  processes[1].send_signal(signal.SIGTERM)
  wait_for(processes, workdir, train.PREEMPTED_EXIT_STATUS)
  stopped_again_at = saved_steps(workdir)[-1]
  assert stopped_at < stopped_again_at < TOTAL_STEPS, logs(workdir)
  assert max(tiny_runs.losses_by_step(workdir)) == stopped_again_at
  assert not os.path.exists(os.path.join(workdir, "training_curves.png"))

  train_in_processes(workdir, environment)
  assert f"Resumed from the checkpoint of step {stopped_again_at}" in output(workdir, 0)
  assert tiny_runs.losses_by_step(workdir) == tiny_runs.losses_by_step(two_process_run)
  config = tiny_config()
  resumed, resumed_data_state, _ = tiny_runs.restore_params(workdir, config, jax.devices())
  reference, reference_data_state, _ = tiny_runs.restore_params(two_process_run, config,
                                                                jax.devices())
  assert resumed_data_state == reference_data_state
  for name, value in tiny_runs.flat_params(reference).items():
    np.testing.assert_array_equal(tiny_runs.flat_params(resumed)[name], value, err_msg=name)


# Joins the processes through clip_jax.distributed and prints what they gather.
GATHER_SCRIPT = """
import sys
from clip_jax import distributed
from clip_jax import settings
process_id, address = int(sys.argv[1]), sys.argv[2]
distributed.initialize(settings.Distributed(
    mode="explicit", coordinator_address=address, num_processes=2, process_id=process_id))
print(distributed.gather_int64([2**40 + process_id, -process_id]).tolist())
"""


def test_int64_values_cross_processes_whole(environment, tmp_path):
  """Data positions beyond 2**31 (byte offsets, sample counts) reach the checkpoint intact."""
  address = f"localhost:{tiny_runs.free_port()}"
  log_base = str(tmp_path / "gather")
  wait_for(start_processes([["-c", GATHER_SCRIPT, str(process_id), address]
                            for process_id in range(NUM_PROCESSES)], log_base, environment),
           log_base)
  for process_id in range(NUM_PROCESSES):
    # A substring, not a whole line: gloo's connection messages go to the same file, unbuffered,
    # and may land in the middle of the printed line.
    assert str([[2**40, 0], [2**40 + 1, -1]]) in output(log_base, process_id)


def test_distributed_arguments_of_each_mode():
  assert distributed.initialize_arguments(settings.Distributed()) is None
  assert distributed.initialize_arguments(settings.Distributed(
      mode="auto", local_device_ids=(0, 1))) == {"local_device_ids": [0, 1]}
  assert distributed.initialize_arguments(settings.Distributed(
      mode="explicit", coordinator_address="10.0.0.1:1234", num_processes=2,
      process_id=1)) == {
      "coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1,
      "cluster_detection_method": "deactivate"}
