"""A run's train step on a mesh: the model, optimiser, loss, the state's shardings, and the
jitted step. Training (clip_jax.train) builds it for this machine's devices, clip_jax.plan for a
TPU slice's, so that the plan compiles exactly what training runs.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import optax

from clip_jax import finetune
from clip_jax import losses
from clip_jax import models
from clip_jax import optim
from clip_jax import settings
from clip_jax import sharding
from clip_jax import train_step as train_step_lib


def create_optimizer(run: settings.Run) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimiser, which leaves the parameters that config.finetune locks alone, and its
  learning-rate schedule."""
  optimizer, schedule = optim.create_optimizer(run.optim, run.total_steps)
  return finetune.lock(optimizer, run.finetune), schedule


def state_initializer(run: settings.Run, model: models.CLIP, optimizer: optax.GradientTransformation
                      ) -> Callable[..., train_step_lib.TrainState]:
  """`init(rng, variables=None) -> TrainState` for the configured global batch's shapes."""
  return functools.partial(
      train_step_lib.create_train_state, model=model, optimizer=optimizer,
      image_shape=(run.global_batch_size, run.data.image_size, run.data.image_size, 3),
      text_shape=(run.global_batch_size, run.data.context_length), ema=run.ema_decay > 0)


class Program(NamedTuple):
  """What a run compiles, for a mesh of this machine's devices (`build`) or of a TPU topology's
  (clip_jax.plan): the model, the state's initialiser, shapes and shardings, and the step."""
  model: models.CLIP
  init: Callable[..., train_step_lib.TrainState]  # (rng, variables=None) -> TrainState
  abstract_state: train_step_lib.TrainState  # of jax.ShapeDtypeStructs
  state_shardings: Any
  step_function: Callable[[float], Callable]  # FLIP mask ratio -> the jitted step


def make_program(run: settings.Run, mesh: jax.sharding.Mesh) -> Program:
  """The model, optimiser, loss (plain or blockwise) and sharded step of `run` on `mesh`."""
  model = models.CLIP(run.model.architecture)
  loss = losses.make_loss(run.loss.name, mesh, sharding.BATCH_AXES,
                          blockwise=run.loss.blockwise, tile_size=run.loss.tile_size)
  optimizer, schedule = create_optimizer(run)
  init = sharding.with_mesh(state_initializer(run, model, optimizer), mesh)
  # From an abstract key: a concrete one would start this machine's default backend, which a plan
  # for a TPU slice must not (on a pod's worker 0 starting it waits for every other host).
  abstract_state = jax.eval_shape(init, jax.eval_shape(jax.random.PRNGKey, run.seed))
  state_shardings = sharding.tree_shardings(abstract_state, mesh, run.mesh.min_shard_size)

  @functools.cache
  def step_function(mask_ratio: float):
    """The jitted step for one FLIP mask ratio: the masked phase's, then the unmasked one's."""
    train_step = train_step_lib.make_train_step(
        model, optimizer, loss, schedule, train_step_lib.StepOptions(
            trainable=functools.partial(finetune.trainable, finetune=run.finetune),
            train_image_tower=finetune.image_tower_trains(run.finetune),
            mask_ratio=mask_ratio, accumulation_steps=run.accumulation_steps,
            batch_shards=sharding.batch_shard_count(mesh), ema_decay=run.ema_decay))
    return jax.jit(sharding.with_mesh(train_step, mesh),
                   in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                   out_shardings=(state_shardings, sharding.replicated(mesh)),
                   donate_argnums=0)

  return Program(model=model, init=init, abstract_state=abstract_state,
                 state_shardings=state_shardings, step_function=step_function)
