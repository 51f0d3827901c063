"""FLIP (Li et al. 2023, "Scaling Language-Image Pre-training via Masking"): the training schedule.

`config.flip.mask_ratio` is the fraction of each image's patches dropped at random in training
(clip_jax.models.vision), which makes the image tower's step that much cheaper;
`config.flip.unmasked_steps` trains the last steps on whole images again, FLIP's unmasked tuning
phase, which closes the gap between masked training and unmasked evaluation. The run then has two
compiled train steps, the masked one and the unmasked one, each compiled on its first step.
Evaluation always sees whole images.
"""

from __future__ import annotations

from clip_jax import settings


def first_unmasked_step(flip: settings.Flip, total_steps: int) -> int:
  """The first (1-based) step of the unmasked phase; total_steps + 1 when there is none."""
  return total_steps - flip.unmasked_steps + 1


def mask_ratio_at(step: int, flip: settings.Flip, total_steps: int) -> float:
  """The fraction of patches that (1-based) `step` drops: the ratio, then 0 in the last phase."""
  return 0.0 if step >= first_unmasked_step(flip, total_steps) else float(flip.mask_ratio)
