"""Position embeddings at another image size or text length: a checkpoint trained at one
resolution, evaluated or fine-tuned at another (CLIP ViT-B/16 from 224 to 336 px, SigLIP from 256
to 384), and a text tower given more or fewer tokens.

An image tower's learned positions form a grid (after any class token's); resizing interpolates
the grid as an image of `width` channels. The two references do it differently, and a setting
chooses (`towers.POSITION_INTERPOLATIONS`):

* "open_clip": `open_clip.model.resize_pos_embed`, PyTorch's bicubic interpolation with
  antialiasing (PIL's filter, a = -0.5, widened when the grid shrinks);
* "hf": transformers' `interpolate_pos_encoding`, bicubic without antialiasing (a = -0.75,
  edge pixels repeated).

Text positions are a sequence, resized by linear interpolation as open_clip's
`resize_text_pos_embed` does. Each interpolation is a [new, old] matrix of float64 weights
computed here once, as `torch.nn.functional.interpolate(align_corners=False)` computes them
(written out because jax.image.resize's cubic kernel is Keys' a = -0.5 without PyTorch's edge
handling: neither reference's numbers), and applied per axis.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from flax import traverse_util
import numpy as np

from clip_jax.models import configs
from clip_jax.models import towers

METHODS = towers.POSITION_INTERPOLATIONS


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
  """Keys' cubic convolution kernel with parameter `a`, at distances x."""
  x = np.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _matrix_plain(old: int, new: int, mode: str) -> np.ndarray:
  """PyTorch's linear or bicubic (a = -0.75) interpolation without antialiasing: each output
  samples the input at (i + 0.5) * old / new - 0.5, neighbours past the edge repeat it."""
  matrix = np.zeros((new, old))
  source = (np.arange(new) + 0.5) * old / new - 0.5
  if mode == "linear":
    source = np.maximum(source, 0.0)
    low = np.floor(source).astype(int)
    fraction = source - low
    np.add.at(matrix, (np.arange(new), low), 1 - fraction)
    np.add.at(matrix, (np.arange(new), np.minimum(low + 1, old - 1)), fraction)
    return matrix
  low = np.floor(source).astype(int)
  fraction = source - low
  for offset in (-1, 0, 1, 2):
    weights = _cubic(offset - fraction, -0.75)
    np.add.at(matrix, (np.arange(new), np.clip(low + offset, 0, old - 1)), weights)
  return matrix


def _matrix_antialiased(old: int, new: int) -> np.ndarray:
  """PyTorch's antialiased bicubic (PIL's): a = -0.5, the kernel stretched by the shrink factor,
  the window cut at the edges and its weights renormalised."""
  scale = old / new
  stretch = max(scale, 1.0)
  support = 2.0 * stretch
  matrix = np.zeros((new, old))
  for row in range(new):
    center = scale * (row + 0.5)
    first = max(int(center - support + 0.5), 0)
    last = min(int(center + support + 0.5), old)
    columns = np.arange(first, last)
    weights = _cubic((columns - center + 0.5) / stretch, -0.5)
    matrix[row, first:last] = weights / weights.sum()
  return matrix


def interpolation_matrix(old: int, new: int, mode: str, antialias: bool = False) -> np.ndarray:
  """[new, old] float64: `torch.nn.functional.interpolate` of a length-`old` signal to `new`
  (align_corners=False) as a matrix; mode "linear" or "bicubic"."""
  if antialias and mode == "bicubic":
    return _matrix_antialiased(old, new)
  return _matrix_plain(old, new, mode)


def resize_grid(embedding: np.ndarray, prefix_tokens: int, edge: int,
                method: str) -> np.ndarray:
  """[prefix + g * g, W] positions -> [prefix + edge * edge, W]: the prefix kept, the g x g grid
  interpolated to edge x edge by `method`."""
  if method not in METHODS:
    raise ValueError(f"position_interpolation={method!r}; allowed: {', '.join(METHODS)}.")
  prefix, grid = embedding[:prefix_tokens], embedding[prefix_tokens:]
  old = math.isqrt(len(grid))
  if old * old != len(grid):
    raise ValueError(f"{len(grid)} grid positions are not a square grid.")
  matrix = interpolation_matrix(old, edge, "bicubic", antialias=method == "open_clip")
  grid = grid.astype(np.float64).reshape(old, old, -1)                       # [g, g, W]
  grid = np.einsum("ij,kl,jlw->ikw", matrix, matrix, grid)                  # [e, e, W]
  resized = grid.reshape(edge * edge, -1).astype(embedding.dtype)
  return np.concatenate([prefix, resized], axis=0)


def resize_sequence(embedding: np.ndarray, length: int) -> np.ndarray:
  """[L, W] text positions -> [length, W], linearly interpolated (open_clip's way)."""
  matrix = interpolation_matrix(len(embedding), length, "linear")
  return (matrix @ embedding.astype(np.float64)).astype(embedding.dtype)


def resized_config(config: configs.CLIPConfig, image_size: int | None = None,
            context_length: int | None = None) -> configs.CLIPConfig:
  """The architecture at another image size and/or text length (None: unchanged), checked."""
  changes = {}
  if image_size is not None:
    changes["vision"] = dataclasses.replace(config.vision, image_size=image_size)
  if context_length is not None:
    changes["text"] = dataclasses.replace(config.text, context_length=context_length)
  config = dataclasses.replace(config, **changes)
  configs.check(config)
  return config


def default_method(config: configs.CLIPConfig) -> str:
  """The image tower family's own interpolation: open_clip's for CLIP, transformers' for SigLIP."""
  return towers.of(config.vision).position_interpolation


def resize_variables(variables: dict[str, Any], old: configs.CLIPConfig, new: configs.CLIPConfig,
                     method: str | None = None) -> dict[str, Any]:
  """`old`'s variables (numpy, unrolled or scanned) for `new`, the same architecture at another
  image size or text length: the positions interpolated, every other variable shared.

  Raises a ValueError if the two differ in anything else, or the image tower has no positions.
  """
  method = method or default_method(old)
  if method not in METHODS:
    raise ValueError(f"position_interpolation={method!r}; allowed: {', '.join(METHODS)}.")
  if not resizable(old, new):
    raise ValueError(f"{new} differs from the checkpoint's {old} in more than the image size and "
                     "text length; allowed: a change of vision.image_size or "
                     "text.context_length.")
  params = dict(variables["params"])
  if old.vision.image_size != new.vision.image_size:
    tower = towers.of(old.vision)
    if tower.positions is None:
      raise ValueError(f"A {towers.describe(old.vision)} image tower has no learned positions to "
                       f"resize for image_size={new.vision.image_size}; allowed: "
                       f"{old.vision.image_size}.")
    grid = tower.positions(new.vision)
    visual = traverse_util.flatten_dict(params["visual"])
    visual[grid.path] = resize_grid(np.asarray(visual[grid.path]), grid.prefix_tokens, grid.edge,
                                    method)
    params["visual"] = traverse_util.unflatten_dict(visual)
  if old.text.context_length != new.text.context_length:
    params["text"] = {**params["text"], "positional_embedding": resize_sequence(
        np.asarray(params["text"]["positional_embedding"]), new.text.context_length)}
  return {**variables, "params": params}


def resizable(old: configs.CLIPConfig, new: configs.CLIPConfig) -> bool:
  """Whether `new` is `old`'s function at another image size or text length (or the same)."""
  def beyond_positions(config):
    fields = configs.function_fields(config)
    fields["vision"].pop("image_size")
    fields["text"].pop("context_length")
    return fields
  return beyond_positions(old) == beyond_positions(new)
