"""CLIP's and SigLIP's losses computed tile by tile: memory O(b * D + tile^2) per device, not
O(B^2).

The plain losses (clip_jax/losses.py) hold a [b, N] logits block per device and, for the
gradient, as much again: at N = 65,536 that is gigabytes per device. Here nothing larger than one
[tile, tile] block of logits exists at any time, in either pass. The method is Inf-CL's (Cheng et
al. 2024, "Breaking the Memory Barrier: Near Infinite Batch Size Scaling for Contrastive Loss"):

* Each device keeps its b images (the rows) and sends its b texts (a column block) round a ring of
  the devices (`ppermute`); after n hops every block is back home and every device has scored its
  rows against every column once. Nobody gathers the other devices' features.
* Within a (row block, column block) pair, tiles of [tile, tile] logits update running
  accumulators: per row (image->text log-sum-exp, image gradients), which stay on the device; per
  column (text->image log-sum-exp, text gradients), which travel with their block and so come
  home with it; and scalars (the temperature's and bias's gradients).
* A custom VJP saves only the features and the [b] log-sum-exps of the rows and of the columns,
  and recomputes each tile's logits in the backward pass, where d loss / d logit =
  softmax(row) + softmax(column) - 2 * [i = j] (softmax) or -label * sigmoid(-label * logit)
  (sigmoid) gives the gradients tile by tile.

The functions have the signatures of their plain counterparts, plus the tile size; `axis_name` is
the mesh axis (or axes) the batch is split over inside `shard_map`, None for one device.
Shapes: b = local batch, N = global batch, D = embedding width, t = tile.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

AxisName = str | Sequence[str] | None
Tree = Any


def tile_size_for(local_batch: int, tile_size: int) -> int:
  """The largest divisor of the local batch not above `tile_size`, so that tiles cover it
  exactly."""
  return max(size for size in range(1, min(tile_size, local_batch) + 1) if local_batch % size == 0)


def _split_into_tiles(tree: Tree, tile: int) -> Tree:
  """[b, ...] -> [b / t, t, ...] for every leaf."""
  return jax.tree.map(lambda leaf: leaf.reshape(-1, tile, *leaf.shape[1:]), tree)


def _join_tiles(tree: Tree) -> Tree:
  return jax.tree.map(lambda leaf: leaf.reshape(-1, *leaf.shape[2:]), tree)


def _num_shards(axis_name: AxisName) -> int:
  return 1 if axis_name is None else jax.lax.axis_size(axis_name)


def _global_sum(value: jax.Array, axis_name: AxisName) -> jax.Array:
  return value if axis_name is None else jax.lax.psum(value, axis_name)


def _varying(tree: Tree, axis_name: AxisName) -> Tree:
  """Marks fresh accumulators as differing between devices, as the values they will hold do
  (shard_map's type checking wants a loop's carry to keep its type)."""
  if axis_name is None:
    return tree
  axes = (axis_name,) if isinstance(axis_name, str) else tuple(axis_name)

  def mark(leaf):
    missing = tuple(axis for axis in axes if axis not in jax.typeof(leaf).manual_axis_type.varying)
    return jax.lax.pcast(leaf, missing, to="varying") if missing else leaf

  return jax.tree.map(mark, tree)


TileFn = Callable[[Tree, Tree, Tree, Tree, Tree], tuple[Tree, Tree, Tree]]


def _sweep_block(tile_fn: TileFn, rows: Tree, row_state: Tree, columns: Tree, column_state: Tree,
                 totals: Tree) -> tuple[Tree, Tree, Tree]:
  """Applies `tile_fn(rows, columns, row_state, column_state, totals)` to every tile of one
  (row block, column block) pair; all trees are split into tiles, [b / t, t, ...]."""

  def over_rows(carry, row_slice):
    column_state, totals = carry
    row_tile, row_state_tile = row_slice

    def over_columns(carry, column_slice):
      row_state_tile, totals = carry
      column_tile, column_state_tile = column_slice
      row_state_tile, column_state_tile, totals = tile_fn(
          row_tile, column_tile, row_state_tile, column_state_tile, totals)
      return (row_state_tile, totals), column_state_tile

    (row_state_tile, totals), column_state = jax.lax.scan(
        over_columns, (row_state_tile, totals), (columns, column_state))
    return (column_state, totals), row_state_tile

  (column_state, totals), row_state = jax.lax.scan(over_rows, (column_state, totals),
                                                   (rows, row_state))
  return row_state, column_state, totals


def _ring(tile_fn: TileFn, rows: Tree, row_state: Tree, columns: Tree, column_state: Tree,
          totals: Tree, axis_name: AxisName, tile: int) -> tuple[Tree, Tree, Tree]:
  """Every local row against every column of the global batch, tile by tile.

  `rows` and `row_state` stay; `columns` and `column_state` go round the ring of devices and are
  home again at the end, with `column_state` updated by every device. Returns the final
  (row_state, column_state, totals); `totals` are this device's sums.
  """
  num_shards = _num_shards(axis_name)
  rows, columns = _split_into_tiles(rows, tile), _split_into_tiles(columns, tile)
  row_state, column_state = _split_into_tiles(_varying((row_state, column_state), axis_name), tile)
  totals = _varying(totals, axis_name)
  # Device i passes to device i + 1: after k hops it holds the block of device i - k.
  next_device = [(index, (index + 1) % num_shards) for index in range(num_shards)]

  def step(_, carry):
    row_state, columns, column_state, totals = carry
    row_state, column_state, totals = _sweep_block(tile_fn, rows, row_state, columns,
                                                   column_state, totals)
    if num_shards > 1:
      columns, column_state = jax.lax.ppermute((columns, column_state), axis_name, next_device)
    return row_state, columns, column_state, totals

  row_state, _, column_state, totals = jax.lax.fori_loop(
      0, num_shards, step, (row_state, columns, column_state, totals))
  return _join_tiles(row_state), _join_tiles(column_state), totals


class Pairs(NamedTuple):
  """One side (images or texts) of a device's block of pairs, as the tiles read it."""
  features: jax.Array       # [b, D] this side's features (images for rows, texts for columns)
  ids: jax.Array            # [b] positions in the global batch: image i matches text i
  positives: jax.Array      # [b] the logit of each pair with its match


def _pairs(features: jax.Array, other_side: jax.Array, scale: jax.Array,
           axis_name: AxisName) -> Pairs:
  """The local block; its matches are local too, so their logits are computed here, once."""
  local_size = features.shape[0]
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * local_size
  return Pairs(features, offset + jnp.arange(local_size),
               scale * jnp.sum(features * other_side, axis=-1))


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  """a @ b in full float32 (as the plain losses: with a logit scale near 100, one bfloat16 pass
  would move a logit by about 0.1)."""
  return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _tile_logits(rows: Pairs, columns: Pairs, scale: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[t, t] scaled similarities of a tile and the mask of its matching pairs.

  A match's logit is taken from `positives`, so that the forward pass, the backward pass and the
  shifts below all see the very same number for it, however XLA tiles the matmul.
  """
  matches = rows.ids[:, None] == columns.ids[None, :]
  logits = scale * _matmul(rows.features, columns.features.T)
  return jnp.where(matches, rows.positives[:, None], logits), matches


def _feature_gradients(weights, rows: Pairs, columns: Pairs, scale, row_grads, column_grads):
  """Adds d loss / d features of a tile, from `weights` = d loss / d logits [t, t]."""
  return (row_grads + scale * _matmul(weights, columns.features),
          column_grads + scale * _matmul(weights.T, rows.features))


# --- softmax (CLIP) ----------------------------------------------------------------------------
# Each row's (column's) log-sum-exp is accumulated minus its positive logit, i.e. as its
# cross-entropy: a number of order log N, where the log-sum-exp itself (up to 100 + log N) would
# lose digits to rounding, and its sum over the batch many more.


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _softmax_local_sum(images, texts, logit_scale, axis_name, tile):
  """This device's part of the summed cross-entropies of both directions (a [] float32)."""
  return _softmax_forward(images, texts, logit_scale, axis_name, tile)[0]


def _softmax_forward(images, texts, logit_scale, axis_name, tile):
  scale = jnp.exp(logit_scale)

  def tile_fn(rows, columns, row_entropy, column_entropy, totals):
    logits, _ = _tile_logits(rows, columns, scale)                                  # [t, t]
    return (jnp.logaddexp(row_entropy,
                          jax.nn.logsumexp(logits - rows.positives[:, None], axis=1)),
            jnp.logaddexp(column_entropy,
                          jax.nn.logsumexp(logits - columns.positives[None, :], axis=0)),
            totals)

  nothing_yet = jnp.full(images.shape[:1], -jnp.inf, jnp.float32)                # [b]
  row_entropy, column_entropy, _ = _ring(
      tile_fn, _pairs(images, texts, scale, axis_name), nothing_yet,
      _pairs(texts, images, scale, axis_name), nothing_yet, (), axis_name, tile)
  local_sum = jnp.sum(row_entropy) + jnp.sum(column_entropy)
  return local_sum, (images, texts, logit_scale, row_entropy, column_entropy)


def _softmax_backward(axis_name, tile, residuals, cotangent):
  images, texts, logit_scale, row_entropy, column_entropy = residuals
  scale = jnp.exp(logit_scale)

  def tile_fn(row_data, column_data, image_grads, text_grads, scale_grad):
    (rows, row_entropy), (columns, column_entropy) = row_data, column_data
    logits, matches = _tile_logits(rows, columns, scale)                            # [t, t]
    row_softmax = jnp.exp(logits - rows.positives[:, None] - row_entropy[:, None])
    column_softmax = jnp.exp(logits - columns.positives[None, :] - column_entropy[None, :])
    weights = cotangent * (row_softmax + column_softmax - 2.0 * matches)            # [t, t]
    image_grads, text_grads = _feature_gradients(weights, rows, columns, scale, image_grads,
                                                 text_grads)
    return image_grads, text_grads, scale_grad + jnp.sum(weights * logits)

  image_grads, text_grads, scale_grad = _ring(
      tile_fn, (_pairs(images, texts, scale, axis_name), row_entropy), jnp.zeros_like(images),
      (_pairs(texts, images, scale, axis_name), column_entropy), jnp.zeros_like(texts),
      jnp.float32(0.0), axis_name, tile)
  return image_grads, text_grads, scale_grad


_softmax_local_sum.defvjp(_softmax_forward, _softmax_backward)


# --- sigmoid (SigLIP) --------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _sigmoid_local_sum(images, texts, logit_scale, logit_bias, axis_name, tile):
  """This device's part of the sum of -log sigmoid(label * logit) over all pairs (a [] float32)."""
  return _sigmoid_forward(images, texts, logit_scale, logit_bias, axis_name, tile)[0]


def _sigmoid_logits(rows: Pairs, columns: Pairs, scale, logit_bias):
  """[t, t] logits of a tile and its labels: 1 for matching pairs, -1 for the others."""
  logits, matches = _tile_logits(rows, columns, scale)
  return logits + logit_bias, jnp.where(matches, 1.0, -1.0)


def _sigmoid_forward(images, texts, logit_scale, logit_bias, axis_name, tile):
  scale = jnp.exp(logit_scale)

  def tile_fn(rows, columns, row_state, column_state, loss_sum):
    logits, labels = _sigmoid_logits(rows, columns, scale, logit_bias)              # [t, t]
    return row_state, column_state, loss_sum - jnp.sum(jax.nn.log_sigmoid(labels * logits))

  _, _, loss_sum = _ring(tile_fn, _pairs(images, texts, scale, axis_name), (),
                         _pairs(texts, images, scale, axis_name), (), jnp.float32(0.0),
                         axis_name, tile)
  return loss_sum, (images, texts, logit_scale, logit_bias)


def _sigmoid_backward(axis_name, tile, residuals, cotangent):
  images, texts, logit_scale, logit_bias = residuals
  scale = jnp.exp(logit_scale)

  def tile_fn(rows, columns, image_grads, text_grads, scalar_grads):
    logits, labels = _sigmoid_logits(rows, columns, scale, logit_bias)              # [t, t]
    weights = -cotangent * labels * jax.nn.sigmoid(-labels * logits)                # [t, t]
    image_grads, text_grads = _feature_gradients(weights, rows, columns, scale, image_grads,
                                                 text_grads)
    scale_grad, bias_grad = scalar_grads
    return image_grads, text_grads, (scale_grad + jnp.sum(weights * (logits - logit_bias)),
                                     bias_grad + jnp.sum(weights))

  image_grads, text_grads, (scale_grad, bias_grad) = _ring(
      tile_fn, _pairs(images, texts, scale, axis_name), jnp.zeros_like(images),
      _pairs(texts, images, scale, axis_name), jnp.zeros_like(texts),
      (jnp.float32(0.0), jnp.float32(0.0)), axis_name, tile)
  return image_grads, text_grads, scale_grad, bias_grad


_sigmoid_local_sum.defvjp(_sigmoid_forward, _sigmoid_backward)


# --- the losses ---------------------------------------------------------------------------------


def _prepare(features: tuple[jax.Array, ...], scalars: tuple[jax.Array, ...],
             axis_name: AxisName):
  """float32 features; scalars marked as differing per device, so that their gradients (each
  device's part) are summed over the devices by shard_map."""
  features = tuple(jnp.asarray(feature, jnp.float32) for feature in features)
  scalars = tuple(jnp.asarray(scalar, jnp.float32) for scalar in scalars)
  return features, _varying(scalars, axis_name)


def blockwise_softmax_loss(image_features: jax.Array, text_features: jax.Array,
                           logit_scale: jax.Array, logit_bias: jax.Array | None = None, *,
                           axis_name: AxisName = None, tile_size: int = 1024) -> jax.Array:
  """`losses.softmax_contrastive_loss`, tile by tile (`logit_bias` is ignored, as there)."""
  del logit_bias
  local_batch = image_features.shape[0]
  (images, texts), (logit_scale,) = _prepare((image_features, text_features), (logit_scale,),
                                             axis_name)
  total = _softmax_local_sum(images, texts, logit_scale, axis_name,
                             tile_size_for(local_batch, tile_size))
  return _global_sum(total, axis_name) / (2 * local_batch * _num_shards(axis_name))


def blockwise_sigmoid_loss(image_features: jax.Array, text_features: jax.Array,
                           logit_scale: jax.Array, logit_bias: jax.Array, *,
                           axis_name: AxisName = None, tile_size: int = 1024) -> jax.Array:
  """`losses.sigmoid_contrastive_loss`, tile by tile."""
  local_batch = image_features.shape[0]
  (images, texts), (logit_scale, logit_bias) = _prepare(
      (image_features, text_features), (logit_scale, logit_bias), axis_name)
  total = _sigmoid_local_sum(images, texts, logit_scale, logit_bias, axis_name,
                             tile_size_for(local_batch, tile_size))
  return _global_sum(total, axis_name) / (local_batch * _num_shards(axis_name))
