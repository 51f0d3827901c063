"""Zero-shot classification of images by a pretrained CLIP, printed as a table:

  python -m clip_jax.classify --model=<checkpoint or workdir> --labels="cat,dog,car" img.jpg ...

Each label becomes a text embedding averaged over a prompt ensemble (by default the paper's 80
ImageNet templates, "a photo of a {}." and 79 more; `--templates` names another set), and each
image gets the softmax over labels of its scaled cosine similarities, as CLIP's paper classifies.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# pylint: disable=g-import-not-at-top,wrong-import-position
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from clip_jax import embeddings
from clip_jax.evaluation import prompts


def table(images: Sequence[str], labels: Sequence[str], probs: np.ndarray) -> str:
  """A row per image: its most probable label, then every label's probability."""
  name_width = max(len("image"), *(len(os.path.basename(image)) for image in images))
  widths = [max(len(label), 6) for label in labels]
  header = f"{'image':<{name_width}}  {'best':<{max(widths)}}  " + "  ".join(
      f"{label:>{width}}" for label, width in zip(labels, widths))
  lines = [header]
  for image, row in zip(images, probs):
    lines.append(f"{os.path.basename(image):<{name_width}}  "
                 f"{labels[int(np.argmax(row))]:<{max(widths)}}  " + "  ".join(
                     f"{p:>{width}.3f}" for p, width in zip(row, widths)))
  return "\n".join(lines)


_MODEL = flags.DEFINE_string("model", None, "A converted checkpoint or a training workdir.")
_LABELS = flags.DEFINE_list("labels", None, "The class names, comma-separated.")
_TEMPLATES = flags.DEFINE_enum("templates", "imagenet80", list(prompts.TEMPLATE_SETS),
                               "The prompt ensemble.")


def main(argv):
  images = argv[1:]
  if not images:
    raise app.UsageError("Give the images to classify, as paths.")
  logging.set_verbosity(logging.WARNING)
  embedder = embeddings.Embedder(_MODEL.value)
  probs = embedder.classify(images, _LABELS.value, prompts.templates(_TEMPLATES.value))
  print(table(images, _LABELS.value, probs))


if __name__ == "__main__":
  flags.mark_flags_as_required(["model", "labels"])
  app.run(main)
