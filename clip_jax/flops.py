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

import dataclasses

import jax

from clip_jax import flip
from clip_jax import settings
from clip_jax.models import clip
from clip_jax.models import configs
from clip_jax.models import vision


@dataclasses.dataclass(frozen=True)
class Cost:
  """FLOPs of one part for one sample: its forward pass, and its backward pass."""

  forward: float = 0.0
  backward: float = 0.0

  def __add__(self, other: "Cost") -> "Cost":
    return Cost(self.forward + other.forward, self.backward + other.backward)

  def __mul__(self, factor: float) -> "Cost":
    return Cost(self.forward * factor, self.backward * factor)

  @property
  def total(self) -> float:
    return self.forward + self.backward


def matmul(flops: float, input_is_data: bool = False) -> Cost:
  """A matmul of `flops` forward FLOPs; its backward computes the weight gradient and, unless the
  input is the data, the input gradient."""
  return Cost(flops, flops if input_is_data else 2 * flops)


def transformer(tokens: int, width: int, layers: int, mlp_dim: int | None,
                remat: bool = False) -> Cost:
  """`layers` pre-LN blocks on `tokens` tokens: q/k/v/out projections, the attention logits and
  the weighted sum (full L x L: the causal mask does not skip work), and the MLP."""
  mlp_dim = mlp_dim or 4 * width
  projections = 2 * tokens * width * (3 * width + width + 2 * mlp_dim)
  attention = 2 * 2 * tokens * tokens * width
  block = matmul(projections + attention)
  if remat:
    block += Cost(0.0, block.forward)
  return block * layers


def vision_transformer(config: configs.VisionTransformerConfig, embed_dim: int,
                       mask_ratio: float = 0.0, remat: bool = False) -> Cost:
  grid = config.image_size // config.patch_size
  patches = grid * grid
  embedding = matmul(2 * patches * config.patch_size ** 2 * 3 * config.width, input_is_data=True)
  tokens = 1 + (vision.kept_patch_count(patches, mask_ratio) if mask_ratio else patches)
  return (embedding + transformer(tokens, config.width, config.layers, config.mlp_dim, remat)
          + matmul(2 * config.width * embed_dim))


def _conv(size: int, kernel: int, features_in: int, features_out: int,
          input_is_data: bool = False) -> Cost:
  """A convolution with a `size` x `size` output."""
  return matmul(2 * size * size * kernel * kernel * features_in * features_out, input_is_data)


def modified_resnet(config: configs.ModifiedResNetConfig, embed_dim: int) -> Cost:
  """The stem's three 3x3 convolutions, the bottlenecks (1x1, 3x3, pool, 1x1; a pooled 1x1
  shortcut where the shape changes), and the attention pool (one query: the mean token)."""
  half, width = config.width // 2, config.width
  size = config.image_size // 2
  cost = (_conv(size, 3, 3, half, input_is_data=True) + _conv(size, 3, half, half)
          + _conv(size, 3, half, width))
  size //= 2
  channels = width
  for stage, blocks in enumerate(config.layers):
    planes = width * 2 ** stage
    for index in range(blocks):
      stride = 2 if stage > 0 and index == 0 else 1
      out_size, features = size // stride, 4 * planes
      cost += (_conv(size, 1, channels, planes) + _conv(size, 3, planes, planes)
               + _conv(out_size, 1, planes, features))
      if stride > 1 or channels != features:
        cost += _conv(out_size, 1, channels, features)
      size, channels = out_size, features
  tokens = 1 + size * size
  attention_pool = (2 * channels * channels  # q_proj, of the mean token only
                    + 2 * 2 * tokens * channels * channels  # k_proj, v_proj
                    + 2 * 2 * tokens * channels  # logits and weighted sum of the one query
                    + 2 * channels * embed_dim)  # c_proj
  return cost + matmul(attention_pool)


def image_tower(config: configs.CLIPConfig, mask_ratio: float = 0.0,
                remat: bool = False) -> Cost:
  if isinstance(config.vision, configs.ModifiedResNetConfig):
    return modified_resnet(config.vision, config.embed_dim)
  return vision_transformer(config.vision, config.embed_dim, mask_ratio, remat)


def text_tower(config: configs.CLIPConfig, remat: bool = False) -> Cost:
  """The transformer over the whole context, then the projection of the end-of-text token (the
  token embedding is a lookup, no FLOPs)."""
  text = config.text
  return (transformer(text.context_length, text.width, text.layers, text.mlp_dim, remat)
          + matmul(2 * text.width * config.embed_dim))


def contrastive_loss(embed_dim: int, global_batch_size: int) -> Cost:
  """Each sample's row of the [N, N] logits (both modalities' features take gradients)."""
  return matmul(2 * embed_dim * global_batch_size)


def train_flops_per_sample(config: configs.CLIPConfig, global_batch_size: int,
                           mask_ratio: float = 0.0, hardware: bool = False,
                           accumulated: bool = False) -> dict[str, Cost]:
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
      parts[tower] += Cost(0.0, parts[tower].forward)
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
