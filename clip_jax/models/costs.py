"""FLOP counting's units, shared by the towers (each counts its own) and clip_jax.flops (which adds
them up for a run): 2 FLOPs per multiply-accumulate of every matmul and convolution, forward and
backward, as the scaling-law literature counts them."""

from __future__ import annotations

import dataclasses


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
  the weighted sum (full L x L: the causal mask does not skip work), and the MLP. With `remat`,
  the backward pass runs each block's forward pass again."""
  mlp_dim = mlp_dim or 4 * width
  projections = 2 * tokens * width * (3 * width + width + 2 * mlp_dim)
  attention = 2 * 2 * tokens * tokens * width
  block = matmul(projections + attention)
  if remat:
    block += Cost(0.0, block.forward)
  return block * layers
