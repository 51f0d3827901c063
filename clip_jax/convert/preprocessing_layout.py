"""A checkpoint's image preprocessing in the files open_clip and Hugging Face publish beside the
weights, read into and written from `image_preparation.Preprocessing`.

open_clip: `open_clip_config.json`'s "preprocess_cfg" (mean, std, interpolation, resize_mode: the
names clip_jax uses). Hugging Face: `preprocessor_config.json` (image_mean, image_std, PIL's
filter number as "resample", and `size`: {"shortest_edge": S} with a centre crop is OpenAI's
view, {"height": S, "width": S} without one is "squash").
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from clip_jax import image_preparation

OPEN_CLIP_CONFIG = "open_clip_config.json"
HF_PREPROCESSOR_CONFIG = "preprocessor_config.json"
# PIL.Image.Resampling's numbers, which Hugging Face's image processors store.
_PIL_FILTERS = {"bilinear": 2, "bicubic": 3}


def _channels(value) -> tuple[float, float, float]:
  """A per-channel statistic; open_clip also takes one number for all three channels."""
  return tuple(float(x) for x in value) if isinstance(value, (list, tuple)) else (float(value),) * 3


def from_open_clip(preprocess_cfg: Mapping[str, Any]) -> dict[str, Any]:
  """The fields of open_clip's preprocess_cfg that it sets."""
  fields = {key: _channels(preprocess_cfg[key]) for key in ("mean", "std")
            if key in preprocess_cfg}
  fields.update({key: preprocess_cfg[key] for key in ("resize_mode", "interpolation")
                 if key in preprocess_cfg})
  return fields


def from_hf(processor: Mapping[str, Any]) -> dict[str, Any]:
  """The fields of a Hugging Face image processor's config that it sets."""
  fields = {key: _channels(processor[name]) for key, name in (("mean", "image_mean"),
                                                              ("std", "image_std"))
            if name in processor}
  filters = {number: name for name, number in _PIL_FILTERS.items()}
  if processor.get("resample") in filters:
    fields["interpolation"] = filters[processor["resample"]]
  elif "resample" in processor:
    raise ValueError(f"{HF_PREPROCESSOR_CONFIG}: resample={processor['resample']!r}; allowed: "
                     f"{', '.join(f'{number} ({name})' for name, number in _PIL_FILTERS.items())}.")
  size = processor.get("size")
  if isinstance(size, Mapping) and "height" in size and not processor.get("do_center_crop"):
    fields["resize_mode"] = "squash"
  elif size is not None:
    fields["resize_mode"] = "shortest"
  return fields


def published(src: str, name: str) -> dict[str, Any] | None:
  """The JSON file `name` published beside the weights `src` (a file, or a directory holding
  them), or None if there is none."""
  directory = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
  if not os.path.isfile(path := os.path.join(directory, name)):
    return None
  with open(path) as file:
    return json.load(file)


def read(src: str) -> tuple[dict[str, Any], str | None]:
  """(fields, the file they came from) of the preprocessing published beside the weights `src`
  (a file or a directory): open_clip's config first, then Hugging Face's; ({}, None) if none."""
  for name, parse, key in ((OPEN_CLIP_CONFIG, from_open_clip, "preprocess_cfg"),
                           (HF_PREPROCESSOR_CONFIG, from_hf, None)):
    content = published(src, name)
    if content is not None and (key is None or key in content):
      return parse(content if key is None else content[key]), name
  return {}, None


def to_open_clip(preprocessing: image_preparation.Preprocessing, image_size: int) -> dict[str, Any]:
  """open_clip's preprocess_cfg."""
  return dict(size=image_size, mean=list(preprocessing.mean), std=list(preprocessing.std),
              interpolation=preprocessing.interpolation, resize_mode=preprocessing.resize_mode)


def to_hf(preprocessing: image_preparation.Preprocessing, image_size: int,
          processor: str = "CLIPImageProcessor") -> dict[str, Any]:
  """preprocessor_config.json for one of transformers' image processors (CLIP's, SigLIP's)."""
  squash = preprocessing.resize_mode == "squash"
  return {
      "image_processor_type": processor,
      "do_resize": True,
      "size": ({"height": image_size, "width": image_size} if squash
               else {"shortest_edge": image_size}),
      "resample": _PIL_FILTERS[preprocessing.interpolation],
      "do_center_crop": not squash,
      "crop_size": {"height": image_size, "width": image_size},
      "do_rescale": True,
      "rescale_factor": 1 / 255,
      "do_normalize": True,
      "image_mean": list(preprocessing.mean),
      "image_std": list(preprocessing.std),
      "do_convert_rgb": True,
  }
