"""Contrastive losses of CLIP (softmax) and SigLIP (sigmoid) over a globally sharded batch.

Each loss is written for one shard of the batch: inside `jax.shard_map` a device holds `b` of the
`N` image-text pairs, gathers the other modality's features ([N, D], small) and scores only its
own rows against them ([b, N] logits). Summing the per-row losses with `psum` gives the loss of the
global batch on every device, and no device ever holds the N x N similarity matrix. With
`axis_name=None` the same code treats its inputs as the whole batch (b = N).

Shapes: b = local batch, N = global batch, D = embedding width.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from clip_jax import blockwise_losses
from clip_jax import registry

AxisName = str | Sequence[str] | None
# (image_features, text_features, logit_scale, logit_bias or None) -> []
LossFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array | None], jax.Array]
# (the model's named outputs, the batch) -> []: what the train step differentiates.
Loss = Callable[[dict[str, jax.Array], dict[str, jax.Array]], jax.Array]


def _gather_batch(features: jax.Array, axis_name: AxisName) -> jax.Array:
  """All examples' features on every device, in global batch order: [b, D] -> [N, D]."""
  if axis_name is None:
    return features
  return jax.lax.all_gather(features, axis_name, axis=0, tiled=True)


def _sum_over_batch(value: jax.Array, axis_name: AxisName) -> jax.Array:
  """Adds up the per-shard sums, so that every device ends with the global sum."""
  if axis_name is None:
    return value
  return jax.lax.psum(value, axis_name)


def _positive_pairs(local_size: int, global_size: int, axis_name: AxisName) -> jax.Array:
  """[b, N] mask of the matching pairs: local row i pairs with global column offset + i."""
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * local_size
  rows = offset + jnp.arange(local_size)                       # [b]
  return rows[:, None] == jnp.arange(global_size)[None, :]     # [b, N]


def _scaled_similarities(queries: jax.Array, keys: jax.Array, logit_scale: jax.Array) -> jax.Array:
  """float32 logits exp(logit_scale) * q . k of the local queries against all keys: [b, N].

  Full float32 precision: with a scale near 100, the single bfloat16 pass that accelerators may use
  for float32 matmuls by default can move a logit by about 0.1.
  """
  similarities = jnp.matmul(queries.astype(jnp.float32), keys.astype(jnp.float32).T,
                            precision=jax.lax.Precision.HIGHEST)          # [b, N]
  return jnp.exp(jnp.asarray(logit_scale, jnp.float32)) * similarities


def _summed_cross_entropy(queries: jax.Array, all_keys: jax.Array, logit_scale: jax.Array,
                          axis_name: AxisName) -> jax.Array:
  """Sum over the local queries of the cross-entropy of picking their own key among all N.

  Used for both directions (images against all texts, texts against all images).
  """
  logits = _scaled_similarities(queries, all_keys, logit_scale)           # [b, N]
  log_probs = jax.nn.log_softmax(logits, axis=-1)                         # [b, N]
  positives = _positive_pairs(queries.shape[0], all_keys.shape[0], axis_name)
  return -jnp.sum(jnp.where(positives, log_probs, 0.0))


def softmax_contrastive_loss(image_features: jax.Array, text_features: jax.Array,
                             logit_scale: jax.Array, *, axis_name: AxisName = None) -> jax.Array:
  """CLIP's loss: mean of the image->text and text->image cross-entropies of the global batch.

  Args:
    image_features: [b, D] L2-normalised image embeddings of this shard.
    text_features: [b, D] L2-normalised text embeddings of the same pairs.
    logit_scale: [] the learned log inverse temperature (logits are scaled by its exp).
    axis_name: the mesh axis (or axes) the batch is split over, inside `shard_map`; None when
      the inputs are the whole batch.

  Returns:
    [] the loss of the global batch, the same on every device.
  """
  all_images = _gather_batch(image_features, axis_name)                   # [N, D]
  all_texts = _gather_batch(text_features, axis_name)                     # [N, D]
  image_to_text = _summed_cross_entropy(image_features, all_texts, logit_scale, axis_name)
  text_to_image = _summed_cross_entropy(text_features, all_images, logit_scale, axis_name)
  total = _sum_over_batch(image_to_text + text_to_image, axis_name)
  return total / (2 * all_texts.shape[0])


def sigmoid_contrastive_loss(image_features: jax.Array, text_features: jax.Array,
                             logit_scale: jax.Array, logit_bias: jax.Array, *,
                             axis_name: AxisName = None) -> jax.Array:
  """SigLIP's loss: every image-text pair of the global batch is a binary match / no-match task.

  The sum of -log sigmoid(label * logit) over all N x N pairs is divided by N (per image, as in
  Zhai et al. 2023), not by N^2, so the many negatives do not dilute the gradient. The pairs are
  symmetric, so scoring the local images against all texts covers every pair exactly once.

  Args:
    image_features: [b, D] L2-normalised image embeddings of this shard.
    text_features: [b, D] L2-normalised text embeddings of the same pairs.
    logit_scale: [] the learned log inverse temperature.
    logit_bias: [] the learned logit bias, which offsets the prior of the many negatives.
    axis_name: as in `softmax_contrastive_loss`.

  Returns:
    [] the loss of the global batch, the same on every device.
  """
  all_texts = _gather_batch(text_features, axis_name)                     # [N, D]
  logits = _scaled_similarities(image_features, all_texts, logit_scale)   # [b, N]
  logits = logits + jnp.asarray(logit_bias, jnp.float32)
  positives = _positive_pairs(image_features.shape[0], all_texts.shape[0], axis_name)
  labels = jnp.where(positives, 1.0, -1.0)                                # [b, N]
  total = _sum_over_batch(-jnp.sum(jax.nn.log_sigmoid(labels * logits)), axis_name)
  return total / all_texts.shape[0]


def _softmax_with_unused_bias(image_features: jax.Array, text_features: jax.Array,
                              logit_scale: jax.Array, logit_bias: jax.Array | None, *,
                              axis_name: AxisName = None) -> jax.Array:
  """Gives the softmax loss, which has no bias, the signature shared by all losses."""
  del logit_bias
  return softmax_contrastive_loss(image_features, text_features, logit_scale,
                                  axis_name=axis_name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossKind:
  """A loss as the settings and the train step know it, registered where it is defined (a
  plug-in's loss in its own module, named in model.plugins)."""
  name: str                                 # loss.name
  # (mesh or None, batch axes, *, blockwise, tile_size) -> loss(outputs, batch) -> []
  make: Callable[..., Loss]
  blockwise: bool = False                   # whether loss.blockwise=True has a form to compute
  # What the loss needs of the model, under model.overrides' own settings: e.g. the sigmoid
  # loss's learned bias.
  model_fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)


KINDS: registry.Registry[LossKind] = registry.Registry("loss")
# The contrastive losses' per-shard functions: (plain, blockwise), for make_loss_fn.
_CONTRASTIVE: dict[str, tuple[LossFn, LossFn]] = {}


def register(kind: LossKind) -> LossKind:
  return KINDS.register(kind)


def names() -> list[str]:
  return KINDS.names()


def of(name: str, key: str = "loss.name") -> LossKind:
  """The registration of a loss; `key` names the setting in an error."""
  return KINDS.get(name, key)


def make_loss_fn(name: str, mesh: Mesh | None = None,
                 batch_axes: Sequence[str] | None = None, *, blockwise: bool = False,
                 tile_size: int = 1024) -> LossFn:
  """A contrastive loss as `loss_fn(image_features, text_features, logit_scale, logit_bias) -> []`.

  The returned function takes global arrays whose batch is split over `batch_axes` of `mesh` and
  runs the loss per shard in `shard_map`; it is differentiable (the gathers transpose to
  reduce-scatters). Without a mesh it is the plain single-device loss. `blockwise=True` computes
  the same loss in [tile_size, tile_size] tiles (clip_jax/blockwise_losses.py), for global
  batches whose [b, N] logits would not fit.
  """
  plain, tiled = _CONTRASTIVE[name]
  loss_fn = functools.partial(tiled, tile_size=tile_size) if blockwise else plain
  if mesh is None:
    return loss_fn
  # By default the batch is split over every axis of the mesh (clip_jax.sharding's convention).
  batch_axes = tuple(mesh.axis_names if batch_axes is None else batch_axes)
  batch_split = PartitionSpec(batch_axes)
  return jax.shard_map(
      functools.partial(loss_fn, axis_name=batch_axes), mesh=mesh,
      in_specs=(batch_split, batch_split, PartitionSpec(), PartitionSpec()),
      out_specs=PartitionSpec())


def _register_contrastive(name: str, plain: LossFn, tiled: LossFn,
                          model_fields: Mapping[str, Any] | None = None) -> LossKind:
  """A contrastive loss, reading the model's features, temperature and bias by name."""
  _CONTRASTIVE[name] = (plain, tiled)

  def make(mesh: Mesh | None = None, batch_axes: Sequence[str] | None = None, *,
           blockwise: bool = False, tile_size: int = 1024) -> Loss:
    loss_fn = make_loss_fn(name, mesh, batch_axes, blockwise=blockwise, tile_size=tile_size)

    def loss(outputs: dict[str, jax.Array], batch: dict[str, jax.Array]) -> jax.Array:
      del batch  # the pairs' order is all a contrastive loss needs of it
      return loss_fn(outputs["image_features"], outputs["text_features"],
                     outputs["logit_scale"], outputs.get("logit_bias"))

    return loss

  return register(LossKind(name=name, make=make, blockwise=True,
                           model_fields=model_fields or {}))


_register_contrastive("softmax", _softmax_with_unused_bias,
                      blockwise_losses.blockwise_softmax_loss)
# SigLIP starts from a temperature of 1/10 and a bias of -10, which put the initial logits near
# the log-prior of the N - 1 negatives per positive.
_register_contrastive("sigmoid", sigmoid_contrastive_loss, blockwise_losses.blockwise_sigmoid_loss,
                      dict(init_logit_scale=math.log(10.0), init_logit_bias=-10.0))


def make_loss(name: str, mesh: Mesh | None = None,
              batch_axes: Sequence[str] | None = None, *, blockwise: bool = False,
              tile_size: int = 1024) -> Loss:
  """The registered loss `name` as the train step takes it: `loss(outputs, batch) -> []`."""
  return of(name).make(mesh, batch_axes, blockwise=blockwise, tile_size=tile_size)
