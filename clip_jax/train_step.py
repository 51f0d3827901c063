"""The train state and the one jit-compiled, sharded train step.

The step runs the two towers on the globally sharded batch (XLA partitions the model), then the
contrastive loss inside `shard_map` (clip_jax.losses), so that no device holds the whole N x N
similarity matrix. With FLIP's `mask_ratio` the image tower sees a random subset of each image's
patches, drawn from the state's rng and the step number. A step whose loss or gradients are not
finite leaves the state unchanged and reports `finite = False`; the training loop then stops or
goes on, as the config says.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

# OpenAI clamps the learned temperature so that logits are scaled by at most 100.
MAX_LOGIT_SCALE = math.log(100.0)


@flax.struct.dataclass
class TrainState:
  step: jax.Array                # [] int32
  params: Any
  batch_stats: Any               # BatchNorm statistics (ModifiedResNet); {} for ViTs.
  opt_state: optax.OptState
  rng: jax.Array                 # For stochastic parts of later steps (patch dropping).


def create_train_state(rng: jax.Array, variables: dict[str, Any] | None = None, *,
                       model: nn.Module, optimizer: optax.GradientTransformation,
                       image_shape: tuple[int, ...], text_shape: tuple[int, ...]) -> TrainState:
  """Initialises parameters (or takes pretrained `variables`) and the optimiser state.

  Call under jit to place them sharded.
  """
  init_rng, state_rng = jax.random.split(rng)
  if variables is None:
    variables = model.init(init_rng, jnp.zeros(image_shape, jnp.float32),
                           jnp.zeros(text_shape, jnp.int32))
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}),
                    opt_state=optimizer.init(params), rng=state_rng)


def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation, loss_fn: Callable,
                    schedule: optax.Schedule, *, trainable: Callable[[Any], Any] | None = None,
                    train_image_tower: bool = True, mask_ratio: float = 0.0
                    ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Returns `train_step(state, batch) -> (state, metrics)`, to be wrapped in jax.jit.

  `trainable(params)` marks the parameters that train (True) or stay locked (False; see
  clip_jax.finetune): no gradient flows into locked ones, so XLA computes no backward pass for a
  locked tower. `train_image_tower=False` runs the image tower in inference mode (BatchNorm on its
  running statistics, which then stay as they are).

  `mask_ratio` > 0 drops that fraction of every image's patches (FLIP; a ViT image tower, locked
  or not). The masks come from `fold_in(state.rng, state.step)`: a new draw every step, and the
  same draws in a resumed run as in an uninterrupted one. A Python float, so each ratio is its
  own compiled step with static shapes.
  """

  def compute_loss(params, batch_stats, batch, rng):
    if trainable is not None:
      params = jax.tree.map(lambda param, trains: param if trains else jax.lax.stop_gradient(param),
                            params, trainable(params))
    variables = {"params": params}
    mutable = []
    if batch_stats:
      variables["batch_stats"] = batch_stats
      mutable = ["batch_stats"] if train_image_tower else []
    outputs, updates = model.apply(variables, batch["image"], batch["text"],
                                   train=train_image_tower, patch_dropout=mask_ratio,
                                   rngs={"patch_dropout": rng}, mutable=mutable)
    loss = loss_fn(outputs["image_features"], outputs["text_features"], outputs["logit_scale"],
                   outputs.get("logit_bias"))
    return loss, updates.get("batch_stats", batch_stats)

  def train_step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict]:
    (loss, batch_stats), grads = jax.value_and_grad(compute_loss, has_aux=True)(
        state.params, state.batch_stats, batch, jax.random.fold_in(state.rng, state.step))
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params = {**params, "logit_scale": jnp.clip(params["logit_scale"], 0.0, MAX_LOGIT_SCALE)}
    finite = jnp.isfinite(loss) & _all_finite(grads)
    updated = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
    # A non-finite step changes nothing but the step counter, so the state stays usable.
    kept = state.replace(step=state.step + 1)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, kept)
    metrics = {
        "loss": loss,
        "learning_rate": schedule(state.step),
        "temperature": 1.0 / jnp.exp(new_state.params["logit_scale"]),
        "grad_norm": optax.tree.norm(grads),
        "finite": finite,
    }
    return new_state, metrics

  return train_step
