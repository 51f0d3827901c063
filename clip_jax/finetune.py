"""Fine-tuning from a pretrained checkpoint, with LiT's locked towers (Zhai et al. 2022).

`config.finetune` says where the starting weights come from (a directory written by
`python -m clip_jax.convert`, of the configured architecture or of the same at another image size
or text length, whose positions are then interpolated: clip_jax/models/positions.py) and which
parameters stay frozen: a locked tower takes no updates,
except its last `*_unlocked_blocks` transformer blocks (or ResNet bottlenecks) and what follows
them (the final norm, the pooling, the projection). A fully locked image tower also runs in
inference mode, so a ResNet's BatchNorm keeps its pretrained statistics, as in LiT.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from flax import traverse_util
import jax
import numpy as np
import optax

from clip_jax import pretrained
from clip_jax import settings
from clip_jax.models import configs
from clip_jax.models import positions

_BLOCK = re.compile(r"^(resblocks|layer\d)_(\d+)$")


def _blocks(tower_params: dict[str, Any]) -> list[str]:
  """The names of a tower's blocks in order: transformer blocks or ResNet bottlenecks."""
  names = [name for name in tower_params.get("transformer", tower_params) if _BLOCK.match(name)]
  return sorted(names, key=lambda name: (_BLOCK.match(name)[1], int(_BLOCK.match(name)[2])))


def check_source(finetune: settings.Finetune, architecture: configs.CLIPConfig) -> None:
  """At training start: the checkpoint to start from is a converted one of the configured model
  (`settings.parse` has checked everything that needs no file)."""
  if not finetune.checkpoint:
    return
  if not pretrained.is_converted(finetune.checkpoint):
    raise ValueError(f"finetune.checkpoint={finetune.checkpoint!r} is not a converted "
                     "checkpoint; allowed: a directory written by `python -m clip_jax.convert`.")
  saved = pretrained.read_config(finetune.checkpoint)
  if not positions.resizable(saved, architecture):
    raise ValueError(f"finetune.checkpoint={finetune.checkpoint!r} holds {saved}, but the "
                     f"configured model is {architecture}; allowed: a model.name and "
                     "model.overrides with the checkpoint's sizes, heads and activation (the "
                     "image size and text length may differ).")


# What follows the blocks: ViT (ln_post, proj), SigLIP's ViT (ln_post, its attention-pooling
# head), ResNet (attnpool), text (ln_final, text_projection and its bias).
_HEAD_NAMES = frozenset({"ln_post", "proj", "head", "attnpool", "ln_final", "text_projection",
                         "text_projection_bias"})


def trainable(params: dict[str, Any], finetune: settings.Finetune) -> dict[str, Any]:
  """A tree like `params`: True where the parameter trains, False where it is locked.

  In a locked tower the last `*_unlocked_blocks` blocks train, and what follows the blocks
  (norms, pooling, projections) trains when any block does; what comes before the blocks
  (embeddings, the stem) stays locked. The temperature always trains.
  """
  labels = jax.tree.map(lambda _: True, params)
  for tower, key in (("image", "visual"), ("text", "text")):
    if getattr(finetune, f"lock_{tower}"):
      blocks = _blocks(params[key])
      count = getattr(finetune, f"{tower}_unlocked_blocks")
      unlocked = set(blocks[len(blocks) - count:]) if count else set()

      def label(path, _, unlocked=unlocked, head_trains=count > 0):
        names = [entry.key for entry in path]
        block = next((name for name in names if _BLOCK.match(name)), None)
        if block is not None:
          return block in unlocked
        return head_trains and not _HEAD_NAMES.isdisjoint(names)

      labels[key] = jax.tree_util.tree_map_with_path(label, params[key])
  return labels


def lock(optimizer: optax.GradientTransformation,
         finetune: settings.Finetune) -> optax.GradientTransformation:
  """The optimiser on trainable parameters only; locked ones get zero updates and no state.

  Returns `optimizer` itself when nothing is locked, so that such runs keep their optimiser state
  layout (and their checkpoints).
  """
  if not (finetune.lock_image or finetune.lock_text):
    return optimizer
  return optax.multi_transform({True: optimizer, False: optax.set_to_zero()},
                               functools.partial(trainable, finetune=finetune))


def image_tower_trains(finetune: settings.Finetune) -> bool:
  return not finetune.lock_image or finetune.image_unlocked_blocks > 0


def initial_variables(finetune: settings.Finetune, architecture: configs.CLIPConfig,
                      abstract_state: Any) -> dict[str, Any] | None:
  """The checkpoint's variables (numpy) for the configured `architecture`, its positions
  interpolated to another image size or text length, or None to train from scratch.

  Raises a ValueError naming the first variable whose presence or shape differs from what the
  configured model (`abstract_state`, a TrainState of ShapeDtypeStructs) expects, e.g. a SigLIP
  bias that an OpenAI checkpoint does not have.
  """
  if not finetune.checkpoint:
    return None
  saved, variables = pretrained.read(finetune.checkpoint)
  variables = positions.resize_variables(variables, saved, architecture,
                                         finetune.position_interpolation or None)
  variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  shapes = traverse_util.flatten_dict(jax.tree.map(np.shape, variables), sep="/")
  expected = traverse_util.flatten_dict(
      jax.tree.map(lambda leaf: leaf.shape, {"params": abstract_state.params,
                                             "batch_stats": abstract_state.batch_stats}), sep="/")
  for name in sorted(set(shapes) | set(expected)):
    if shapes.get(name) != expected.get(name):
      raise ValueError(
          f"finetune.checkpoint={finetune.checkpoint!r}: {name} has shape {shapes.get(name)} "
          f"there, but the configured model expects {expected.get(name)} (None: absent); "
          "allowed: a checkpoint of the configured architecture and loss.")
  return variables
