"""Trains a CLIP model: `python -m clip_jax.train --config=configs/<name>.py --workdir=<dir>`.

The config is parsed once (`clip_jax.settings`, failing at once on a bad value) and what needs
files is checked (`check_resources`); `build` makes the mesh and the run's program on it
(clip_jax.program: model, optimiser, jitted step) and restores the workdir's latest checkpoint
if there is one; `train_loop` steps, logs, evaluates and checkpoints until `total_steps`.
SIGTERM (preemption) saves a checkpoint and exits with PREEMPTED_EXIT_STATUS; the next start with
the same workdir resumes from it with the very next batch. The workdir is the run's alone while it
trains (clip_jax.workdir: a lock, and a resume only with the settings it started with).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, NamedTuple

# TensorFlow (tf.data only, here) logs its C++ start-up chatter unless told before it is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app
from absl import flags
from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
from ml_collections import config_flags

import input_pipeline
from clip_jax import checkpoint
from clip_jax import cli
from clip_jax import distributed
from clip_jax import encoding
from clip_jax import files
from clip_jax import finetune
from clip_jax import flip
from clip_jax import flops
from clip_jax import metrics as metrics_lib
from clip_jax import pretrained
from clip_jax import program as program_lib
from clip_jax import settings
from clip_jax import sharding
from clip_jax import train_step as train_step_lib
from clip_jax import workdir as workdir_lib
from clip_jax.evaluation import evaluators

# The exit status of a run stopped by SIGTERM at a checkpoint (EX_TEMPFAIL): run the same command
# again to resume. A finished run exits with 0.
PREEMPTED_EXIT_STATUS = 75


class NonFiniteError(FloatingPointError):
  """The loss or the gradients stopped being finite (with nonfinite='stop')."""


class _Preemption:
  """Remembers a SIGTERM so the loop can checkpoint before exiting.

  Several processes must all save at the same step (a checkpoint is a collective), but SIGTERM
  may reach them at different steps, or only some of them. So under `jax.distributed` the notice
  comes from JAX's preemption sync manager instead, which listens for SIGTERM in every process
  and names one step, the same for all, at which `check` turns true.

  The manager counts in the steps this start has taken, not the run's steps: a notice that
  arrives before the first step (while a resumed run restores and compiles) names the manager's
  step 1, which a run resumed at step 1,001 would otherwise never reach.
  """

  def __init__(self, start_step: int):
    self.requested = False
    self._start_step = start_step
    self._synchronised = jax.distributed.is_initialized()
    if not self._synchronised:
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint, then exiting.")
    self.requested = True

  def check(self, step: int) -> bool:
    """Whether to save and exit after `step`; every process must call it at every step."""
    if (self._synchronised
        and multihost_utils.reached_preemption_sync_point(step - self._start_step)):
      logging.warning("A process received SIGTERM: all save step %d, then exit.", step)
      self.requested = True
    return self.requested

  def restore(self):
    if not self._synchronised:
      signal.signal(signal.SIGTERM, self._previous)


def check_resources(run: settings.Run) -> None:
  """What `settings.parse` cannot check without files: the checkpoint to fine-tune from and the
  evaluators' data. Training start-up only; loading or evaluating a workdir never runs it."""
  finetune.check_source(run.finetune, run.model.architecture)
  evaluators.check_data(run.evals)


EMA_PREFIX = "ema/"


def evaluate(run: settings.Run, model, state: train_step_lib.TrainState, mesh,
             step: int) -> dict[str, float]:
  """The metrics of the evaluators due at `step`, sharded over the training mesh; with a moving
  average of the parameters (ema_decay > 0), its metrics too, named with EMA_PREFIX."""
  results = {}
  for prefix, params in (("", state.params), (EMA_PREFIX, state.ema_params)):
    if not params:
      continue
    variables = {"params": params}
    if state.batch_stats:
      variables["batch_stats"] = state.batch_stats
    encode_image, encode_text = encoding.make_encoders(model, variables, mesh)
    metrics = evaluators.run_evaluators(run.evals, encode_image, encode_text, step, data=run.data,
                                        view=model.config.preprocessing,
                                        total_steps=run.total_steps)
    results.update({prefix + name: value for name, value in metrics.items()})
  return results


def summary_lines(run: settings.Run, results: dict[str, float]) -> list[str]:
  """The evaluators' summary lines, then those of the moving average's evaluation, marked."""
  ema = {name.removeprefix(EMA_PREFIX): value for name, value in results.items()
         if name.startswith(EMA_PREFIX)}
  return [*evaluators.summary_lines(run.evals, results),
          *(f"EMA {line}" for line in evaluators.summary_lines(run.evals, ema))]


def config_json(run: settings.Run) -> str:
  return settings.to_config(run).to_json_best_effort(indent=2, sort_keys=True) + "\n"


def save_config(run: settings.Run, workdir: str) -> None:
  """The run's whole settings as workdir/config.json, so that the workdir alone can be loaded and
  evaluated (`settings.parse` reads it back)."""
  files.write_text(files.path(workdir) / pretrained.WORKDIR_CONFIG, config_json(run))


def check_resume(run: settings.Run, workdir: str) -> None:
  """Refuses to resume the workdir's run with other settings than the ones in its config.json,
  but for those that may change (workdir.RESUMABLE), naming each difference."""
  path = files.path(workdir) / pretrained.WORKDIR_CONFIG
  workdir_lib.check_resume(path, json.loads(config_json(run)), upgrade=settings.upgraded,
                           may_change=workdir_lib.RESUMABLE,
                           remedy=f"Use a new workdir, or the settings of {path}; what may "
                           "change on resume: docs/training.md.")


def gather_data_state(dataset: input_pipeline.DataIterator) -> dict:
  """The data state of every process, for the checkpoint (a collective: all processes call it)."""
  local = dataset.get_state()
  if jax.process_count() == 1:
    return input_pipeline.combine_states([local], dataset.source_digest)
  # Every process's position has the same length: it depends on the config only.
  rows = distributed.gather_int64([local["samples"], local["records"], *local["position"]])
  return input_pipeline.combine_states([
      {"samples": int(row[0]), "records": int(row[1]), "position": [int(v) for v in row[2:]]}
      for row in rows], dataset.source_digest)


def total_skipped_samples(dataset: input_pipeline.DataIterator) -> int:
  """Bad samples dropped so far by all processes together (a collective: all processes call it)."""
  return int(distributed.gather_int64([dataset.skipped_samples]).sum())


class Training(NamedTuple):
  """A run, built and restored: everything its loop needs."""
  run: settings.Run
  workdir: str
  program: program_lib.Program
  mesh: jax.sharding.Mesh
  state: train_step_lib.TrainState
  dataset: input_pipeline.DataIterator
  manager: Any  # orbax.checkpoint.CheckpointManager


def build(run: settings.Run, workdir: str) -> Training:
  """The mesh and the program on it, and the state and data stream: restored from the workdir's
  newest checkpoint that restores if it has one (with the same settings: `check_resume`), else
  initialised (or fine-tuned from). config.json is written once that has succeeded."""
  mesh = sharding.create_mesh(run.mesh)
  sharding.check_batch_size(run.global_batch_size, mesh, jax.process_count(),
                           run.accumulation_steps)
  program = program_lib.make_program(run, mesh)

  manager = checkpoint.create_manager(workdir, run.checkpoint, writer=True)
  data_state = None
  if manager.latest_step() is not None:
    check_resume(run, workdir)
    state, data_state, restored_step = checkpoint.restore_newest(
        manager, checkpoint.abstract_like(program.abstract_state, program.state_shardings))
    if jax.process_index() == 0:
      print(f"Resumed from the checkpoint of step {restored_step} in {workdir}.", flush=True)
  else:
    pretrained_variables = finetune.initial_variables(run.finetune, run.model.architecture,
                                                      program.abstract_state)
    state = jax.jit(program.init, out_shardings=program.state_shardings)(
        jax.random.PRNGKey(run.seed), pretrained_variables)
    if pretrained_variables is not None and jax.process_index() == 0:
      print(f"Fine-tuning from {run.finetune.checkpoint}.", flush=True)
  dataset = input_pipeline.create_dataset(
      run.data, global_batch_size=run.global_batch_size, process_index=jax.process_index(),
      process_count=jax.process_count(), state=data_state)
  if jax.process_index() == 0:
    save_config(run, workdir)
  return Training(run=run, workdir=workdir, program=program, mesh=mesh, state=state,
                  dataset=dataset, manager=manager)


def train_loop(training: Training) -> dict[str, float]:
  """Steps, logs, evaluates and checkpoints until total_steps (or SIGTERM); closes the checkpoint
  manager. Returns the last logged and evaluated scalars."""
  run, workdir, manager, dataset, mesh = (training.run, training.workdir, training.manager,
                                          training.dataset, training.mesh)
  state = training.state
  first_unmasked_step = flip.first_unmasked_step(run.flip, run.total_steps)

  def compute_scalars(step: int) -> dict[str, float]:
    """Training done by the end of `step`: the x-axes of scaling laws (clip_jax.flops)."""
    return {"samples_seen": step * run.global_batch_size,
            "train_flops": flops.cumulative_train_flops(run.model.architecture,
                                                        run.global_batch_size, step, run.flip,
                                                        run.total_steps)}

  is_main = jax.process_index() == 0
  start_step = int(state.step)
  logger = metrics_lib.MetricsLogger(workdir, enabled=is_main, start_step=start_step)
  throughput = metrics_lib.Throughput(start_step, run.total_steps, run.global_batch_size)
  preemption = _Preemption(start_step)
  last_scalars: dict[str, float] = {}
  pending = None  # (step, metrics) of the step in flight: checked after the next is dispatched.

  skips = {"in_a_row": 0, "last_checked": start_step}  # a step may be checked more than once

  def check_finite(step, step_metrics):
    first_check, skips["last_checked"] = step > skips["last_checked"], step
    if bool(step_metrics["finite"]):
      if first_check:
        skips["in_a_row"] = 0
      return
    if run.nonfinite == "skip":
      if first_check:
        skips["in_a_row"] += 1
        logging.warning("Step %d: non-finite loss or gradients; update skipped.", step)
      if skips["in_a_row"] < run.max_consecutive_skips:
        return
      manager.wait_until_finished()
      raise NonFiniteError(
          f"Steps {step - skips['in_a_row'] + 1} to {step}: {skips['in_a_row']} steps in a row "
          "with a non-finite loss or gradients were skipped (max_consecutive_skips="
          f"{run.max_consecutive_skips}), and training stopped. The last checkpoint is step "
          f"{manager.latest_step()} in {workdir}.")
    manager.wait_until_finished()
    raise NonFiniteError(
        f"Step {step}: loss={float(step_metrics['loss'])} or its gradients are not finite; the "
        f"update was not applied and training stopped. The last good checkpoint is step "
        f"{manager.latest_step()} in {workdir}. Set --config.nonfinite=skip to skip such steps.")

  try:
    for step in range(start_step + 1, run.total_steps + 1):
      batch = sharding.global_batch(next(dataset), mesh)
      step_fn = training.program.step_function(flip.mask_ratio_at(step, run.flip, run.total_steps))
      state, step_metrics = step_fn(state, batch)
      if pending:
        check_finite(*pending)
      pending = (step, step_metrics)
      if step in (start_step + 1, first_unmasked_step):
        jax.block_until_ready(step_metrics)  # Don't count compilation in the throughput.
        throughput = metrics_lib.Throughput(step, run.total_steps, run.global_batch_size)
      if step % run.log_every_steps == 0 or step == run.total_steps:
        check_finite(*pending)
        scalars = {name: float(value) for name, value in step_metrics.items() if name != "finite"}
        scalars.update(throughput.update(step))
        scalars.update(compute_scalars(step))
        scalars["data/skipped_samples"] = total_skipped_samples(dataset)
        logger.write(step, scalars)
        if is_main:
          print(metrics_lib.progress_line(step, run.total_steps, scalars), flush=True)
        last_scalars.update(scalars)
      if evaluators.due(run.evals, step, run.total_steps):
        check_finite(*pending)
        results = evaluate(run, training.program.model, state, mesh, step)
        logger.write(step, {**results, **compute_scalars(step)})
        last_scalars.update(results)
        if is_main:
          for line in summary_lines(run, results):
            print(f"step {step} | {line}", flush=True)
      preempted = preemption.check(step)
      if step % run.checkpoint.every_steps == 0 or step == run.total_steps or preempted:
        check_finite(*pending)
        checkpoint.save(manager, step, state, gather_data_state(dataset), force=True)
      if preemption.requested:
        logging.warning("Saved the checkpoint of step %d after SIGTERM; exiting.", step)
        break
  finally:
    manager.wait_until_finished()
    manager.close()
    logger.close()
    preemption.restore()
  if is_main and not preemption.requested:
    path = metrics_lib.plot_training_curves(workdir)
    print(f"Training curves: {path}", flush=True)
  return last_scalars


def hold_workdir(workdir: str, break_lock: bool = False) -> workdir_lib.Lock | None:
  """Process 0 takes the workdir's lock (None elsewhere); if it cannot, every process raises
  WorkdirBusy (a collective: all processes call it)."""
  lock, refusal = None, None
  if jax.process_index() == 0:
    lock = workdir_lib.Lock(workdir, break_lock=break_lock)
    try:
      lock.acquire()
    except workdir_lib.WorkdirBusy as error:
      lock, refusal = None, error
  if distributed.gather_int64([refusal is not None]).any():
    raise refusal or workdir_lib.WorkdirBusy(f"{workdir} is in use (process 0 says by whom).")
  return lock


def train_and_evaluate(config: ml_collections.ConfigDict | settings.Run, workdir: str, *,
                       break_lock: bool = False) -> dict[str, float]:
  """Runs (or resumes) training in `workdir`, holding its lock; returns the last logged and
  evaluated scalars."""
  run = config if isinstance(config, settings.Run) else settings.parse(config)
  check_resources(run)
  lock = hold_workdir(workdir, break_lock)
  try:
    return train_loop(build(run, workdir))
  finally:
    if lock is not None:
      lock.release()


def main(argv):
  del argv
  # The progress line says what matters; --verbosity=0 for all.
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    run = settings.parse(flags.FLAGS.config)
  except ValueError as error:  # A bad value: the message says which and what is allowed.
    raise app.UsageError(f"--config: {error}") from None
  distributed.initialize(run.distributed)
  workdir = flags.FLAGS.workdir
  try:
    train_and_evaluate(run, workdir, break_lock=flags.FLAGS.break_lock)
  except (workdir_lib.WorkdirBusy, workdir_lib.SettingsChanged,
          input_pipeline.DataChanged) as error:
    cli.refuse(error)
  if run.total_steps not in checkpoint.saved_steps(workdir):
    sys.exit(PREEMPTED_EXIT_STATUS)


if __name__ == "__main__":
  # Defined only when run as a program, so that other programs (clip_jax.sweep) can import this
  # module and define their own --config.
  config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
  workdir_lib.define_break_lock_flag("workdir")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=settings.parse_flags)
