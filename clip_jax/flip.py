"""FLIP (Li et al. 2023, "Scaling Language-Image Pre-training via Masking"): the training schedule.

`config.flip.mask_ratio` is the fraction of each image's patches dropped at random in training
(clip_jax.models.vision), which makes the image tower's step that much cheaper;
`config.flip.unmasked_steps` trains the last steps on whole images again, FLIP's unmasked tuning
phase, which closes the gap between masked training and unmasked evaluation. The run then has two
compiled train steps, the masked one and the unmasked one, each compiled on its first step.
Evaluation always sees whole images.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from clip_jax import config_sections
from clip_jax.models import configs

DEFAULTS = dict(mask_ratio=0.0, unmasked_steps=0)


def settings(flip_config: ml_collections.ConfigDict | None) -> dict[str, Any]:
  """The config over DEFAULTS (no section: no masking); unknown keys raise a ValueError."""
  return config_sections.read_section("flip", flip_config, DEFAULTS)


def check(flip_config, model_config: configs.CLIPConfig, total_steps: int) -> dict[str, Any]:
  """Checks the settings against the run and the model before anything is built; returns them."""
  given = settings(flip_config)
  ratio, unmasked_steps = given["mask_ratio"], given["unmasked_steps"]
  if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
    raise ValueError(f"flip.mask_ratio={ratio!r}; allowed: numbers from 0 (no masking) up to, "
                     "not including, 1.")
  if not config_sections.is_count(unmasked_steps) or not 0 <= unmasked_steps <= total_steps:
    raise ValueError(f"flip.unmasked_steps={unmasked_steps!r}; allowed: integers from 0 to "
                     f"total_steps={total_steps}.")
  if ratio and isinstance(model_config.vision, configs.ModifiedResNetConfig):
    raise ValueError(f"flip.mask_ratio={ratio!r} with a ModifiedResNet image tower, which has no "
                     "patches to drop; allowed: 0, or a ViT model.")
  return given


def first_unmasked_step(given: dict[str, Any], total_steps: int) -> int:
  """The first (1-based) step of the unmasked phase; total_steps + 1 when there is none."""
  return total_steps - given["unmasked_steps"] + 1


def mask_ratio_at(step: int, given: dict[str, Any], total_steps: int) -> float:
  """The fraction of patches that (1-based) `step` drops: the ratio, then 0 in the last phase."""
  return 0.0 if step >= first_unmasked_step(given, total_steps) else float(given["mask_ratio"])
