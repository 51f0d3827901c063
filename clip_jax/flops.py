"""Training compute, counted analytically from the architecture: the x-axis of scaling laws.

Compute is counted as the scaling-law literature counts it (Kaplan et al. 2020; Cherti et al.
2023): 2 FLOPs per multiply-accumulate of every matmul and convolution, forward and backward.
Elementwise work (norms, activations, softmax, pooling) and the optimizer update are left out;
they add a few percent, which `tests/test_flops.py` bounds by checking the count against XLA's
cost analysis of the compiled functions.

The backward pass of a matmul costs twice its forward (the gradients with respect to both
operands), except where one operand is the data (the patch embedding, the ResNet's first
convolution), whose gradient is not computed. Remat's recomputation (one more forward pass of
every transformer block) counts only in the hardware FLOPs (PaLM's HFU, for MFU), not in the
model FLOPs that scaling laws use; XLA may skip recomputing the little the backward pass does
not read. FLIP shortens the image sequence to the kept patches; the patch embedding still sees
every patch (the patches are dropped after it).
"""

from __future__ import annotations

import jax

from clip_jax import flip
from clip_jax import settings
from clip_jax.models import clip
from clip_jax.models import configs
from clip_jax.models import costs
from clip_jax.models import towers


def image_tower(config: configs.CLIPConfig, mask_ratio: float = 0.0,
                remat: bool = False) -> costs.Cost:
  """The image tower's count, by its kind (clip_jax.models.towers)."""
  return towers.of(config.vision).flops(config.vision, config.embed_dim, mask_ratio, remat)


def text_tower(config: configs.CLIPConfig, remat: bool = False) -> costs.Cost:
  """The transformer over the whole context, then the projection of the end-of-text token (the
  token embedding is a lookup, no FLOPs)."""
  text = config.text
  return (costs.transformer(text.context_length, text.width, text.layers, text.mlp_dim, remat)
          + costs.matmul(2 * text.width * config.embed_dim))


def contrastive_loss(embed_dim: int, global_batch_size: int) -> costs.Cost:
  """Each sample's row of the [N, N] logits (both modalities' features take gradients)."""
  return costs.matmul(2 * embed_dim * global_batch_size)


def train_flops_per_sample(config: configs.CLIPConfig, global_batch_size: int,
                           mask_ratio: float = 0.0, hardware: bool = False,
                           accumulated: bool = False) -> dict[str, costs.Cost]:
  """Each part's cost per training sample: "image", "text", "loss", and their sum, "total".

  By default the model's FLOPs, the compute of scaling laws, which neither remat nor gradient
  accumulation changes; `hardware=True` adds what the step recomputes (for MFU against the
  machine): remat's forward passes (a config with remat) and, for an `accumulated` step
  (accumulation_steps > 1), the towers' second forward pass.
  """
  remat = hardware and config.remat
  parts = {"image": image_tower(config, mask_ratio, remat), "text": text_tower(config, remat),
           "loss": contrastive_loss(config.embed_dim, global_batch_size)}
  if hardware and accumulated:
    for tower in ("image", "text"):
      parts[tower] += costs.Cost(0.0, parts[tower].forward)
  parts["total"] = parts["image"] + parts["text"] + parts["loss"]
  return parts


def inference_flops_per_sample(config: configs.CLIPConfig) -> dict[str, float]:
  """Forward FLOPs of embedding one image and one text: what evaluation costs."""
  return {"image": image_tower(config).forward, "text": text_tower(config).forward}


def cumulative_train_flops(config: configs.CLIPConfig, global_batch_size: int, step: int,
                           masking: settings.Flip | None = None,
                           total_steps: int | None = None) -> float:
  """Training FLOPs of the first `step` steps, FLIP's masked steps at their lower cost."""
  per_step = lambda ratio: global_batch_size * train_flops_per_sample(
      config, global_batch_size, ratio)["total"].total
  if not masking or not masking.mask_ratio:
    return step * per_step(0.0)
  masked_steps = min(step, flip.first_unmasked_step(masking, total_steps) - 1)
  return masked_steps * per_step(masking.mask_ratio) + (step - masked_steps) * per_step(0.0)


def parameter_count(config: configs.CLIPConfig) -> dict[str, int]:
  """Parameters per tower, from the model's abstract initialisation (nothing is computed)."""
  shapes = clip.abstract_variables(config)
  count = lambda tree: sum(int(leaf.size) for leaf in jax.tree.leaves(tree))
  params = shapes["params"]
  return {"image": count(params["visual"]), "text": count(params["text"]),
          "total": count(params)}
