"""The train state and the one jit-compiled, sharded train step.

The step runs the two towers on the globally sharded batch (XLA partitions the model), then the
contrastive loss inside `shard_map` (clip_jax.losses), so that no device holds the whole N x N
similarity matrix. With FLIP's `mask_ratio` the image tower sees a random subset of each image's
patches, drawn from the state's rng and the step number. A step whose loss or gradients are not
finite leaves the state unchanged and reports `finite = False`; the training loop then stops or
goes on, as the config says.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from clip_jax import losses
from clip_jax.models import towers
from clip_jax.models import vision

# OpenAI clamps the learned temperature so that logits are scaled by at most 100.
MAX_LOGIT_SCALE = math.log(100.0)


@flax.struct.dataclass
class TrainState:
  step: jax.Array                # [] int32
  params: Any
  batch_stats: Any               # BatchNorm statistics (ModifiedResNet); {} for ViTs.
  opt_state: optax.OptState
  rng: jax.Array                 # For stochastic parts of later steps (patch dropping).
  ema_params: Any                # The parameters' moving average (ema_decay > 0); {} otherwise.


def create_train_state(rng: jax.Array, variables: dict[str, Any] | None = None, *,
                       model: nn.Module, optimizer: optax.GradientTransformation,
                       image_shape: tuple[int, ...], text_shape: tuple[int, ...],
                       ema: bool = False) -> TrainState:
  """Initialises parameters (or takes pretrained `variables`), the optimiser state and, with
  `ema`, the parameters' moving average (starting at the parameters).

  Call under jit to place them sharded.
  """
  init_rng, state_rng = jax.random.split(rng)
  if variables is None:
    variables = model.init(init_rng, jnp.zeros(image_shape, jnp.float32),
                           jnp.zeros(text_shape, jnp.int32))
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}),
                    opt_state=optimizer.init(params), rng=state_rng,
                    ema_params=params if ema else {})


def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def split_micro_batches(tree: Any, steps: int, shards: int) -> Any:
  """Leaves [N, ...] -> [steps, N / steps, ...]. Micro-batch k takes the k-th part of each of the
  `shards` contiguous batch shards, so that every micro-batch is split over the devices that hold
  the batch, and splitting moves no data between them."""
  def split(leaf):
    size = leaf.shape[0] // (shards * steps)
    parts = leaf.reshape(shards, steps, size, *leaf.shape[1:])
    return jnp.swapaxes(parts, 0, 1).reshape(steps, shards * size, *leaf.shape[1:])
  return jax.tree.map(split, tree)


def merge_micro_batches(tree: Any, shards: int) -> Any:
  """The inverse of `split_micro_batches`: [steps, N / steps, ...] -> [N, ...] in batch order."""
  def merge(leaf):
    steps, size = leaf.shape[0], leaf.shape[1] // shards
    parts = leaf.reshape(steps, shards, size, *leaf.shape[2:])
    return jnp.swapaxes(parts, 0, 1).reshape(steps * shards * size, *leaf.shape[2:])
  return jax.tree.map(merge, tree)


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """How a step trains, beyond the model, optimiser, loss and schedule.

  `trainable(params)` marks the parameters that train (True) or stay locked (False; see
  clip_jax.finetune): no gradient flows into locked ones, so XLA computes no backward pass for a
  locked tower. `train_image_tower=False` runs the image tower in inference mode (BatchNorm on its
  running statistics, which then stay as they are).

  `mask_ratio` > 0 drops that fraction of every image's patches (FLIP; a ViT image tower, locked
  or not). The masks come from `fold_in(state.rng, state.step)`, drawn for the whole batch: a new
  draw every step, the same draws in a resumed run as in an uninterrupted one, and with
  accumulation as without. A Python float, so each ratio is its own compiled step with static
  shapes.

  `accumulation_steps` > 1 computes the same loss and gradients in that many micro-batches
  (`accumulated_gradients`); the batch is split into `batch_shards` contiguous shards (one per
  device along the batch axes), each of which every micro-batch takes a part of.

  `ema_decay` > 0 updates the state's moving average of the parameters after each applied update:
  `ema = ema_decay * ema + (1 - ema_decay) * params`.
  """
  trainable: Callable[[Any], Any] | None = None
  train_image_tower: bool = True
  mask_ratio: float = 0.0
  accumulation_steps: int = 1
  batch_shards: int = 1
  ema_decay: float = 0.0


Outputs = dict[str, jax.Array]
Batch = dict[str, jax.Array]
# (params, batch_stats, batch) -> (the model's named outputs, the BatchNorm statistics they leave)
Forward = Callable[[Any, Any, Batch], tuple[Outputs, Any]]
# (params, batch_stats, batch) -> (loss, gradients, new batch_stats)
Gradients = Callable[[Any, Any, Batch], tuple[jax.Array, Any, Any]]


def make_forward(model: nn.Module, options: StepOptions) -> Forward:
  """The model's named outputs (`CLIP.outputs`) with locked parameters cut from the gradient."""

  def forward(params, batch_stats, batch):
    if options.trainable is not None:
      params = jax.tree.map(lambda param, trains: param if trains else jax.lax.stop_gradient(param),
                            params, options.trainable(params))
    variables = {"params": params}
    mutable = []
    if batch_stats:
      variables["batch_stats"] = batch_stats
      mutable = ["batch_stats"] if options.train_image_tower else []
    outputs, updates = model.apply(variables, batch["image"], batch["text"],
                                   train=options.train_image_tower,
                                   patch_indices=batch.get("patch_indices"), mutable=mutable,
                                   method="outputs")
    return outputs, updates.get("batch_stats", batch_stats)

  return forward


def plain_gradients(forward: Forward, loss: losses.Loss) -> Gradients:
  """The loss of the whole batch at once and its gradients."""

  def gradients(params, batch_stats, batch):
    def compute_loss(params):
      outputs, new_batch_stats = forward(params, batch_stats, batch)
      return loss(outputs, batch), new_batch_stats
    (value, new_batch_stats), grads = jax.value_and_grad(compute_loss, has_aux=True)(params)
    return value, grads, new_batch_stats

  return gradients


def accumulated_gradients(forward: Forward, loss: losses.Loss, options: StepOptions) -> Gradients:
  """The same loss and gradients as `plain_gradients`, in `options.accumulation_steps`
  micro-batches, with GradCache's scheme (Gao et al. 2021): every micro-batch's outputs without
  gradients, the loss over the whole batch and its gradient with respect to the outputs, then
  each micro-batch again, its slice of that gradient back through the model. Memory follows the
  micro-batch (apart from the outputs, [N, E] features, and the loss), at the cost of a second
  forward pass.

  Outputs with a batch axis are each example's; scalar outputs (the temperature, the bias) are
  functions of the parameters alone, the same in every micro-batch, so each micro-batch carries
  back 1 / steps of their gradient. A ModifiedResNet's BatchNorm normalises each micro-batch with
  that micro-batch's statistics, so its loss is the loss of those features (not the whole
  batch's, unless its image tower is locked), and its running averages take one update per step,
  with the mean of the micro-batches' statistics.
  """
  steps, shards = options.accumulation_steps, options.batch_shards

  def gradients(params, batch_stats, batch):
    micro_batches = split_micro_batches(batch, steps, shards)

    # 1. Every micro-batch's outputs, without gradients: [steps, N / steps, ...] per example,
    # [steps] per scalar; and the BatchNorm statistics each leaves, averaged.
    _, (micro_outputs, micro_batch_stats) = jax.lax.scan(
        lambda _, micro_batch: (None, forward(params, batch_stats, micro_batch)), None,
        micro_batches)
    scalar_names = [name for name, value in micro_outputs.items() if value.ndim == 1]
    per_example = {name: value for name, value in micro_outputs.items()
                   if name not in scalar_names}
    outputs = {**merge_micro_batches(per_example, shards),
               **{name: micro_outputs[name][0] for name in scalar_names}}
    new_batch_stats = (jax.tree.map(lambda stats: jnp.mean(stats, axis=0), micro_batch_stats)
                       if options.train_image_tower else batch_stats)
    # 2. The loss over the whole batch, and its gradient with respect to the outputs.
    value, output_grads = jax.value_and_grad(loss)(outputs, batch)
    example_grads = split_micro_batches({name: output_grads[name] for name in per_example},
                                        steps, shards)
    scalar_grads = {name: output_grads[name] / steps for name in scalar_names}

    # 3. Each micro-batch again (normalised by BatchNorm as in 1.): its outputs' gradient back
    # through the model.
    def backward(grads, inputs):
      micro_batch, micro_grads = inputs

      def surrogate(params):
        micro_outputs = forward(params, batch_stats, micro_batch)[0]
        return sum(jnp.sum(micro_outputs[name] * grad)
                   for name, grad in {**micro_grads, **scalar_grads}.items())

      return jax.tree.map(jnp.add, grads, jax.grad(surrogate)(params)), None

    grads, _ = jax.lax.scan(backward, jax.tree.map(jnp.zeros_like, params),
                            (micro_batches, example_grads))
    return value, grads, new_batch_stats

  return gradients


def with_kept_patches(batch: Batch, rng: jax.Array, num_patches: int, mask_ratio: float) -> Batch:
  """FLIP: the batch with the patches each image keeps ([B, keep] indices of its `num_patches`),
  drawn for the whole batch; the batch itself without a mask ratio."""
  if not mask_ratio:
    return batch
  batch_size = batch["image"].shape[0]
  return {**batch, "patch_indices": vision.kept_patch_indices(rng, batch_size, num_patches,
                                                             mask_ratio)}


def apply_update(state: TrainState, loss: jax.Array, grads: Any, batch_stats: Any, *,
                 optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                 ema_decay: float) -> tuple[TrainState, dict[str, jax.Array]]:
  """The optimiser's update (the temperature clamped), the moving average, and the metrics. A
  step whose loss or gradients are not finite changes nothing but the step counter, so the state
  stays usable."""
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  params = {**params, "logit_scale": jnp.clip(params["logit_scale"], 0.0, MAX_LOGIT_SCALE)}
  finite = jnp.isfinite(loss) & _all_finite(grads)
  ema_params = state.ema_params
  if ema_decay:
    ema_params = jax.tree.map(lambda average, param: ema_decay * average + (1 - ema_decay) * param,
                              state.ema_params, params)
  updated = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                          opt_state=opt_state, ema_params=ema_params)
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


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation, loss: losses.Loss,
                    schedule: optax.Schedule, options: StepOptions = StepOptions()
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """Returns `train_step(state, batch) -> (state, metrics)`, to be wrapped in jax.jit: the
  forward pass, the gradients of `loss(outputs, batch)` (plain or accumulated), the update."""
  forward = make_forward(model, options)
  gradients = (plain_gradients(forward, loss) if options.accumulation_steps == 1
               else accumulated_gradients(forward, loss, options))

  def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    if options.mask_ratio:
      image_tower = model.config.vision
      batch = with_kept_patches(batch, jax.random.fold_in(state.rng, state.step),
                                towers.of(image_tower).patches(image_tower), options.mask_ratio)
    loss_value, grads, batch_stats = gradients(state.params, state.batch_stats, batch)
    return apply_update(state, loss_value, grads, batch_stats, optimizer=optimizer,
                        schedule=schedule, ema_decay=options.ema_decay)

  return train_step
