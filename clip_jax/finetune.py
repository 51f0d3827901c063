"""Fine-tuning from a pretrained checkpoint, with LiT's locked towers (Zhai et al. 2022).

`config.finetune` says where the starting weights come from (a directory written by
`python -m clip_jax.convert`) and which parameters stay frozen: a locked tower takes no updates,
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
import ml_collections
import numpy as np
import optax

from clip_jax import config_sections
from clip_jax import pretrained
from clip_jax.models import configs

DEFAULTS = dict(checkpoint="", lock_image=False, image_unlocked_blocks=0, lock_text=False,
                text_unlocked_blocks=0)
_BLOCK = re.compile(r"^(resblocks|layer\d)_(\d+)$")


def settings(finetune_config: ml_collections.ConfigDict | None) -> dict[str, Any]:
  """The config over DEFAULTS; unknown keys raise a ValueError naming the allowed ones."""
  return config_sections.read_section("finetune", finetune_config, DEFAULTS)


def _blocks(tower_params: dict[str, Any]) -> list[str]:
  """The names of a tower's blocks in order: transformer blocks or ResNet bottlenecks."""
  names = [name for name in tower_params.get("transformer", tower_params) if _BLOCK.match(name)]
  return sorted(names, key=lambda name: (_BLOCK.match(name)[1], int(_BLOCK.match(name)[2])))


def check(finetune_config, model_config: configs.CLIPConfig) -> dict[str, Any]:
  """Checks the settings against the model before anything is built; returns them."""
  given = settings(finetune_config)
  for tower in ("image", "text"):
    unlocked = given[f"{tower}_unlocked_blocks"]
    if not isinstance(unlocked, int) or unlocked < 0:
      raise ValueError(f"finetune.{tower}_unlocked_blocks={unlocked!r}; allowed: integers >= 0.")
    if unlocked and not given[f"lock_{tower}"]:
      raise ValueError(f"finetune.{tower}_unlocked_blocks={unlocked} without finetune.lock_"
                       f"{tower}=True; allowed: 0, or set lock_{tower}.")
    vision = model_config.vision
    blocks = (model_config.text.layers if tower == "text" else
              vision.layers if isinstance(vision, configs.VisionTransformerConfig) else
              sum(vision.layers))
    if unlocked > blocks:
      raise ValueError(f"finetune.{tower}_unlocked_blocks={unlocked}; allowed: 0 to {blocks}, "
                       "the tower's blocks.")
    if unlocked and model_config.scan:
      raise ValueError(f"finetune.{tower}_unlocked_blocks={unlocked} with model.overrides.scan="
                       "True: scanned blocks share one stacked parameter; allowed: 0 (lock the "
                       "whole tower), or scan=False.")
  if given["checkpoint"]:
    if model_config.scan:
      raise ValueError(f"finetune.checkpoint={given['checkpoint']!r} with model.overrides.scan="
                       "True: converted checkpoints hold unrolled blocks; allowed: scan=False.")
    if not pretrained.is_converted(given["checkpoint"]):
      raise ValueError(f"finetune.checkpoint={given['checkpoint']!r} is not a converted "
                       "checkpoint; allowed: a directory written by `python -m clip_jax.convert`.")
    saved = pretrained.read_config(given["checkpoint"])
    if configs.function_fields(saved) != configs.function_fields(model_config):
      raise ValueError(f"finetune.checkpoint={given['checkpoint']!r} holds {saved}, but the "
                       f"configured model is {model_config}; allowed: a model.name and "
                       "model.overrides with the checkpoint's sizes, heads and activation.")
  return given


# What follows the blocks: ViT (ln_post, proj), ResNet (attnpool), text (ln_final,
# text_projection).
_HEAD_NAMES = frozenset({"ln_post", "proj", "attnpool", "ln_final", "text_projection"})


def trainable(params: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
  """A tree like `params`: True where the parameter trains, False where it is locked.

  In a locked tower the last `*_unlocked_blocks` blocks train, and what follows the blocks
  (norms, pooling, projections) trains when any block does; what comes before the blocks
  (embeddings, the stem) stays locked. The temperature always trains.
  """
  labels = jax.tree.map(lambda _: True, params)
  for tower, key in (("image", "visual"), ("text", "text")):
    if given[f"lock_{tower}"]:
      blocks = _blocks(params[key])
      count = given[f"{tower}_unlocked_blocks"]
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
         given: dict[str, Any]) -> optax.GradientTransformation:
  """The optimiser on trainable parameters only; locked ones get zero updates and no state.

  Returns `optimizer` itself when nothing is locked, so that such runs keep their optimiser state
  layout (and their checkpoints).
  """
  if not (given["lock_image"] or given["lock_text"]):
    return optimizer
  return optax.multi_transform({True: optimizer, False: optax.set_to_zero()},
                               functools.partial(trainable, given=given))


def image_tower_trains(given: dict[str, Any]) -> bool:
  return not given["lock_image"] or given["image_unlocked_blocks"] > 0


def initial_variables(given: dict[str, Any], abstract_state: Any) -> dict[str, Any] | None:
  """The checkpoint's variables (numpy), or None to train from scratch.

  Raises a ValueError naming the first variable whose presence or shape differs from what the
  configured model (`abstract_state`, a TrainState of ShapeDtypeStructs) expects, e.g. a SigLIP
  bias that an OpenAI checkpoint does not have.
  """
  if not given["checkpoint"]:
    return None
  variables = pretrained.read(given["checkpoint"])[1]
  variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  shapes = traverse_util.flatten_dict(jax.tree.map(np.shape, variables), sep="/")
  expected = traverse_util.flatten_dict(
      jax.tree.map(lambda leaf: leaf.shape, {"params": abstract_state.params,
                                             "batch_stats": abstract_state.batch_stats}), sep="/")
  for name in sorted(set(shapes) | set(expected)):
    if shapes.get(name) != expected.get(name):
      raise ValueError(
          f"finetune.checkpoint={given['checkpoint']!r}: {name} has shape {shapes.get(name)} "
          f"there, but the configured model expects {expected.get(name)} (None: absent); "
          "allowed: a checkpoint of the configured architecture and loss.")
  return variables
