"""How a checkpoint's images are prepared: the record the model, the data package and the tools
all read, kept apart from the models so that the data package never imports them."""

from __future__ import annotations

import dataclasses

# OpenAI's per-channel RGB statistics, the default: their weights only work with exactly these.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# "shortest": shorter side to the image size, then the centre crop (OpenAI's); "squash": both
# sides to the image size, the aspect ratio not kept (many open_clip and SigLIP checkpoints').
RESIZE_MODES = ("shortest", "squash")
INTERPOLATIONS = ("bicubic", "bilinear")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preprocessing:
  """How a checkpoint's images were prepared when it was trained: its features assume the same.

  The statistics standardise uint8 pixels inside the model (`CLIP.encode_image`); the resize
  mode and filter make the evaluation view on the host (`input_pipeline.preprocessing`).
  """
  mean: tuple[float, float, float] = OPENAI_MEAN
  std: tuple[float, float, float] = OPENAI_STD
  resize_mode: str = "shortest"
  interpolation: str = "bicubic"
