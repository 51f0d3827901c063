"""AdamW with a warm-up + cosine learning-rate schedule, as CLIP and open_clip train.

Weight decay pulls weight matrices towards zero; applied to gains, biases, embeddings or the learned
temperature it would only fight the parameters that set scales and offsets, so those are masked out
(as OpenAI and open_clip do). The settings and their defaults are `clip_jax.settings.Optim`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax

from clip_jax import settings

# Parameters anywhere under these names are never decayed: embeddings, the class token and the
# learned temperature and bias of the loss.
NO_DECAY_NAMES = frozenset(
    {"token_embedding", "positional_embedding", "class_embedding", "logit_scale", "logit_bias"})
# Leaves with these names are never decayed: LayerNorm / BatchNorm gains and shifts, Dense / Conv
# biases. Matched by name because scanned layers stack a LayerNorm scale into a matrix.
NO_DECAY_LEAVES = frozenset({"scale", "bias"})


def _is_decayed(path: jax.tree_util.KeyPath, leaf: Any) -> bool:
  names = jax.tree_util.keystr(path, simple=True, separator="/").split("/")  # e.g. [visual, proj]
  return (np.ndim(leaf) >= 2 and names[-1] not in NO_DECAY_LEAVES
          and NO_DECAY_NAMES.isdisjoint(names))


def weight_decay_mask(params: Any) -> Any:
  """True for the weight matrices and kernels that weight decay applies to, False elsewhere."""
  return jax.tree_util.tree_map_with_path(_is_decayed, params)


def create_optimizer(optim: settings.Optim, total_steps: int
                     ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns the optimiser and its learning-rate schedule (the schedule also goes to the logs).

  Linear warm-up from 0 to `learning_rate` over `warmup_steps`, then cosine decay to
  `end_learning_rate` at `total_steps`; gradients are clipped to `grad_clip_norm` (if set) before
  they reach AdamW, so one bad batch cannot blow up Adam's moment estimates.
  """
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim.learning_rate, warmup_steps=optim.warmup_steps,
      decay_steps=total_steps, end_value=optim.end_learning_rate)
  transforms = []
  if optim.grad_clip_norm:
    transforms.append(optax.clip_by_global_norm(optim.grad_clip_norm))
  transforms.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                                weight_decay=optim.weight_decay, mask=weight_decay_mask))
  return optax.chain(*transforms), schedule
