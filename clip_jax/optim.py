"""AdamW with a warm-up + cosine learning-rate schedule, as CLIP and open_clip train.

The defaults are open_clip's for ViTs (lr 5e-4, betas 0.9 / 0.98, eps 1e-6, weight decay 0.2).
Weight decay pulls weight matrices towards zero; applied to gains, biases, embeddings or the learned
temperature it would only fight the parameters that set scales and offsets, so those are masked out
(as OpenAI and open_clip do).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax

from clip_jax import config_sections

DEFAULTS = dict(
    learning_rate=5e-4,
    b1=0.9,
    b2=0.98,
    eps=1e-6,
    weight_decay=0.2,
    warmup_steps=10_000,
    grad_clip_norm=0.0,  # 0 or None: no clipping.
    end_learning_rate=0.0,
)

# Parameters anywhere under these names are never decayed: embeddings, the class token and the
# learned temperature and bias of the loss.
NO_DECAY_NAMES = frozenset(
    {"token_embedding", "positional_embedding", "class_embedding", "logit_scale", "logit_bias"})
# Leaves with these names are never decayed: LayerNorm / BatchNorm gains and shifts, Dense / Conv
# biases. Matched by name because scanned layers stack a LayerNorm scale into a matrix.
NO_DECAY_LEAVES = frozenset({"scale", "bias"})


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_config(optim_config, total_steps: int) -> dict[str, Any]:
  """The config over DEFAULTS, checked so that a bad value fails before any compilation."""
  if not config_sections.is_count(total_steps) or total_steps < 1:
    raise ValueError(f"total_steps={total_steps!r}; allowed: positive integers.")
  unknown = sorted(set(optim_config.keys()) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"Unknown optimiser setting optim.{unknown[0]}; allowed: "
                     f"{', '.join(DEFAULTS)}.")
  settings = {**DEFAULTS, **dict(optim_config.items())}
  learning_rate = settings["learning_rate"]
  positive = (lambda value: _is_number(value) and value > 0, "positive numbers")
  fraction = (lambda value: _is_number(value) and 0 <= value < 1, "numbers in [0, 1)")
  rules = {
      "learning_rate": positive,
      "b1": fraction,
      "b2": fraction,
      "eps": positive,
      "weight_decay": (lambda value: _is_number(value) and value >= 0, "non-negative numbers"),
      "warmup_steps": (lambda value: config_sections.is_count(value) and 0 <= value < total_steps,
                       f"integers from 0 to total_steps - 1 = {total_steps - 1}"),
      "grad_clip_norm": (lambda value: value is None or (_is_number(value) and value >= 0),
                         "0 or None (off), or a positive number"),
      "end_learning_rate": (lambda value: _is_number(value) and 0 <= value <= learning_rate,
                            f"numbers from 0 to optim.learning_rate = {learning_rate}"),
  }
  for key, (is_valid, allowed) in rules.items():
    if not is_valid(settings[key]):
      raise ValueError(f"optim.{key}={settings[key]!r}; allowed: {allowed}.")
  return settings


def _is_decayed(path: jax.tree_util.KeyPath, leaf: Any) -> bool:
  names = jax.tree_util.keystr(path, simple=True, separator="/").split("/")  # e.g. [visual, proj]
  return (np.ndim(leaf) >= 2 and names[-1] not in NO_DECAY_LEAVES
          and NO_DECAY_NAMES.isdisjoint(names))


def weight_decay_mask(params: Any) -> Any:
  """True for the weight matrices and kernels that weight decay applies to, False elsewhere."""
  return jax.tree_util.tree_map_with_path(_is_decayed, params)


def create_optimizer(optim_config, total_steps: int
                     ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns the optimiser and its learning-rate schedule (the schedule also goes to the logs).

  Linear warm-up from 0 to `learning_rate` over `warmup_steps`, then cosine decay to
  `end_learning_rate` at `total_steps`; gradients are clipped to `grad_clip_norm` (if set) before
  they reach AdamW, so one bad batch cannot blow up Adam's moment estimates.
  """
  settings = read_config(optim_config, total_steps)
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=settings["learning_rate"],
      warmup_steps=settings["warmup_steps"], decay_steps=total_steps,
      end_value=settings["end_learning_rate"])
  transforms = []
  if settings["grad_clip_norm"]:
    transforms.append(optax.clip_by_global_norm(settings["grad_clip_norm"]))
  transforms.append(optax.adamw(
      schedule, b1=settings["b1"], b2=settings["b2"], eps=settings["eps"],
      weight_decay=settings["weight_decay"], mask=weight_decay_mask))
  return optax.chain(*transforms), schedule
