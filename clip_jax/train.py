"""Trains a CLIP model: `python -m clip_jax.train --config=configs/<name>.py --workdir=<dir>`.

One loop: build everything from the config (failing at once on a bad value), restore the latest
checkpoint of the workdir if there is one, then step, log, evaluate and checkpoint until
`total_steps`. SIGTERM (preemption) saves a checkpoint and exits cleanly; the next start with the
same workdir resumes from it with the very next batch.
"""

from __future__ import annotations

import functools
import os
import signal
from typing import Callable

# TensorFlow (tf.data only, here) logs its C++ start-up chatter unless told before it is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app
from absl import flags
from absl import logging
import jax
from jax.experimental import multihost_utils
from ml_collections import config_flags
import optax

import input_pipeline
from clip_jax import checkpoint
from clip_jax import distributed
from clip_jax import finetune
from clip_jax import flip
from clip_jax import flops
from clip_jax import losses
from clip_jax import metrics as metrics_lib
from clip_jax import models
from clip_jax import optim
from clip_jax import sharding
from clip_jax import train_step as train_step_lib
from clip_jax.evaluation import evaluators

NONFINITE_POLICIES = ("stop", "skip")


class NonFiniteError(FloatingPointError):
  """The loss or the gradients stopped being finite (with nonfinite='stop')."""


class _Preemption:
  """Remembers a SIGTERM so the loop can checkpoint before exiting.

  Several processes must all save at the same step (a checkpoint is a collective), but SIGTERM
  may reach them at different steps, or only some of them. So under `jax.distributed` the notice
  comes from JAX's preemption sync manager instead, which listens for SIGTERM in every process
  and names one step, the same for all, at which `check` turns true.
  """

  def __init__(self):
    self.requested = False
    self._synchronised = jax.distributed.is_initialized()
    if not self._synchronised:
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint, then exiting.")
    self.requested = True

  def check(self, step: int) -> bool:
    """Whether to save and exit after `step`; every process must call it at every step."""
    if self._synchronised and multihost_utils.reached_preemption_sync_point(step):
      logging.warning("A process received SIGTERM: all save step %d, then exit.", step)
      self.requested = True
    return self.requested

  def restore(self):
    if not self._synchronised:
      signal.signal(signal.SIGTERM, self._previous)


def check_config(config, model_config) -> None:
  """Cross-section checks that no single builder can make."""
  if config.nonfinite not in NONFINITE_POLICIES:
    raise ValueError(f"nonfinite={config.nonfinite!r}; allowed: {', '.join(NONFINITE_POLICIES)}.")
  if config.data.image_size != model_config.vision.image_size:
    raise ValueError(f"data.image_size={config.data.image_size} but the model "
                     f"{config.model.name!r} takes {model_config.vision.image_size}; allowed: "
                     f"{model_config.vision.image_size}.")
  input_pipeline.sources.check_name(config.data.name)
  losses.settings(config.loss)
  evaluators.check(config.get("evals", {}), config.data)
  finetune.check(config.get("finetune"), model_config)
  flip.check(config.get("flip"), model_config, config.total_steps)
  if config.data.context_length != model_config.text.context_length:
    raise ValueError(f"data.context_length={config.data.context_length} but the model "
                     f"{config.model.name!r} takes {model_config.text.context_length}; allowed: "
                     f"{model_config.text.context_length}.")


def model_config(config) -> models.CLIPConfig:
  """The configured architecture, with what the loss needs of it (SigLIP's scale and bias),
  checked against the rest of the config."""
  overrides = {**losses.model_settings(config.loss.name), **config.model.overrides}
  architecture = models.get_model_config(config.model.name, **overrides)
  check_config(config, architecture)
  return architecture


def create_model(config) -> models.CLIP:
  return models.CLIP(model_config(config))


def create_optimizer(config) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimiser, which leaves the parameters that config.finetune locks alone, and its
  learning-rate schedule."""
  optimizer, schedule = optim.create_optimizer(config.optim, config.total_steps)
  return finetune.lock(optimizer, finetune.settings(config.get("finetune"))), schedule


def state_initializer(config, model: models.CLIP, optimizer: optax.GradientTransformation
                      ) -> Callable[..., train_step_lib.TrainState]:
  """`init(rng, variables=None) -> TrainState` for the configured global batch's shapes."""
  return functools.partial(
      train_step_lib.create_train_state, model=model, optimizer=optimizer,
      image_shape=(config.global_batch_size, config.data.image_size, config.data.image_size, 3),
      text_shape=(config.global_batch_size, config.data.context_length))


def evaluate(config, model, state: train_step_lib.TrainState, mesh,
             step: int) -> dict[str, float]:
  """The metrics of the evaluators due at `step`, sharded over the training mesh."""
  variables = {"params": state.params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  encode_image, encode_text = evaluators.make_encoders(model, variables, mesh)
  return evaluators.run_evaluators(config.evals, encode_image, encode_text, step,
                                   data_config=config.data, total_steps=config.total_steps)


def save_config(config, workdir: str) -> None:
  """The run's whole config as workdir/config.json, so that the workdir alone can be evaluated."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as file:
    file.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def gather_data_state(dataset: input_pipeline.DataIterator) -> dict:
  """The data state of every process, for the checkpoint (a collective: all processes call it)."""
  local = dataset.get_state()
  if jax.process_count() == 1:
    return input_pipeline.combine_states([local])
  # Every process's position has the same length: it depends on the config only.
  rows = distributed.gather_int64([local["samples"], local["records"], *local["position"]])
  return input_pipeline.combine_states([
      {"samples": int(row[0]), "records": int(row[1]), "position": [int(v) for v in row[2:]]}
      for row in rows])


def total_skipped_samples(dataset: input_pipeline.DataIterator) -> int:
  """Bad samples dropped so far by all processes together (a collective: all processes call it)."""
  return int(distributed.gather_int64([dataset.skipped_samples]).sum())


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Runs (or resumes) training in `workdir`; returns the last logged and evaluated scalars."""
  architecture = model_config(config)
  model = models.CLIP(architecture)
  if jax.process_index() == 0:
    save_config(config, workdir)
  mesh = sharding.create_mesh(config.mesh)
  sharding.check_batch_size(config.global_batch_size, mesh, jax.process_count())
  loss_settings = losses.settings(config.loss)
  loss_fn = losses.make_loss_fn(loss_settings["name"], mesh, sharding.BATCH_AXES,
                                blockwise=loss_settings["blockwise"],
                                tile_size=loss_settings["tile_size"])
  optimizer, schedule = create_optimizer(config)
  tuning = finetune.settings(config.get("finetune"))
  init = state_initializer(config, model, optimizer)
  abstract_state = jax.eval_shape(init, jax.random.PRNGKey(config.seed))
  state_shardings = sharding.tree_shardings(abstract_state, mesh,
                                            config.mesh.get("min_shard_size", 2**14))

  manager = checkpoint.create_manager(workdir, config.checkpoint)
  data_state = None
  if manager.latest_step() is not None:
    state, data_state, restored_step = checkpoint.restore(
        manager, checkpoint.abstract_like(abstract_state, state_shardings))
    if jax.process_index() == 0:
      print(f"Resumed from the checkpoint of step {restored_step} in {workdir}.", flush=True)
  else:
    pretrained_variables = finetune.initial_variables(tuning, abstract_state)
    state = jax.jit(init, out_shardings=state_shardings)(jax.random.PRNGKey(config.seed),
                                                         pretrained_variables)
    if pretrained_variables is not None and jax.process_index() == 0:
      print(f"Fine-tuning from {tuning['checkpoint']}.", flush=True)
  dataset = input_pipeline.create_dataset(
      config.data, global_batch_size=config.global_batch_size,
      process_index=jax.process_index(), process_count=jax.process_count(), state=data_state)

  masking = flip.settings(config.get("flip"))
  first_unmasked_step = flip.first_unmasked_step(masking, config.total_steps)

  @functools.cache
  def step_function(mask_ratio: float):
    """The compiled step for one FLIP mask ratio: the masked phase's, then the unmasked one's."""
    return jax.jit(train_step_lib.make_train_step(
                       model, optimizer, loss_fn, schedule,
                       trainable=functools.partial(finetune.trainable, given=tuning),
                       train_image_tower=finetune.image_tower_trains(tuning),
                       mask_ratio=mask_ratio),
                   in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                   out_shardings=(state_shardings, sharding.replicated(mesh)),
                   donate_argnums=0)

  def compute_scalars(step: int) -> dict[str, float]:
    """Training done by the end of `step`: the x-axes of scaling laws (clip_jax.flops)."""
    return {"samples_seen": step * config.global_batch_size,
            "train_flops": flops.cumulative_train_flops(architecture, config.global_batch_size,
                                                        step, masking, config.total_steps)}

  is_main = jax.process_index() == 0
  logger = metrics_lib.MetricsLogger(workdir, enabled=is_main)
  start_step = int(state.step)
  throughput = metrics_lib.Throughput(start_step, config.total_steps, config.global_batch_size)
  preemption = _Preemption()
  last_scalars: dict[str, float] = {}
  pending = None  # (step, metrics) of the step in flight: checked after the next is dispatched.

  def check_finite(step, step_metrics):
    if bool(step_metrics["finite"]):
      return
    if config.nonfinite == "skip":
      logging.warning("Step %d: non-finite loss or gradients; update skipped.", step)
      return
    manager.wait_until_finished()
    raise NonFiniteError(
        f"Step {step}: loss={float(step_metrics['loss'])} or its gradients are not finite; the "
        f"update was not applied and training stopped. The last good checkpoint is step "
        f"{manager.latest_step()} in {workdir}. Set --config.nonfinite=skip to skip such steps.")

  try:
    for step in range(start_step + 1, config.total_steps + 1):
      batch = sharding.global_batch(next(dataset), mesh)
      step_fn = step_function(flip.mask_ratio_at(step, masking, config.total_steps))
      state, step_metrics = step_fn(state, batch)
      if pending:
        check_finite(*pending)
      pending = (step, step_metrics)
      if step in (start_step + 1, first_unmasked_step):
        jax.block_until_ready(step_metrics)  # Don't count compilation in the throughput.
        throughput = metrics_lib.Throughput(step, config.total_steps, config.global_batch_size)
      if step % config.log_every_steps == 0 or step == config.total_steps:
        check_finite(*pending)
        scalars = {name: float(value) for name, value in step_metrics.items() if name != "finite"}
        scalars.update(throughput.update(step))
        scalars.update(compute_scalars(step))
        scalars["data/skipped_samples"] = total_skipped_samples(dataset)
        logger.write(step, scalars)
        if is_main:
          print(metrics_lib.progress_line(step, config.total_steps, scalars), flush=True)
        last_scalars.update(scalars)
      if evaluators.due(config.get("evals", {}), step, config.total_steps):
        check_finite(*pending)
        results = evaluate(config, model, state, mesh, step)
        logger.write(step, {**results, **compute_scalars(step)})
        last_scalars.update(results)
        if is_main:
          for line in evaluators.summary_lines(config.evals, results):
            print(f"step {step} | {line}", flush=True)
      preempted = preemption.check(step)
      if step % config.checkpoint.every_steps == 0 or step == config.total_steps or preempted:
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


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:  # The progress line says what matters; --verbosity=0 for all.
    logging.set_verbosity(logging.WARNING)
  config = flags.FLAGS.config
  distributed.initialize(config)
  train_and_evaluate(config, flags.FLAGS.workdir)


if __name__ == "__main__":
  # Defined only when run as a program, so that other programs (clip_jax.sweep) can import this
  # module and define their own --config.
  config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
