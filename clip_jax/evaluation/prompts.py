"""Class names and prompt templates for zero-shot classification.

The curated sets are OpenAI's (assets/, MIT license in assets/NOTICE.md): ImageNet's 1,000 class
names with the paper's 80 templates (or the 7 OpenAI later found slightly better), CIFAR-10 and
CIFAR-100 with their 18. Any other TFDS dataset uses its own label names ("tfds"), underscores
turned into spaces, with the 80 ImageNet templates by default or the single "a photo of a {}.".
"""

from __future__ import annotations

import functools
import importlib.resources
import json

# Set name -> (asset file, key in it).
_TEMPLATE_ASSETS = {"imagenet80": ("imagenet_zeroshot.json", "templates_80"),
                    "imagenet7": ("imagenet_zeroshot.json", "templates_simple_7"),
                    "cifar": ("cifar_zeroshot.json", "templates_18")}
_CLASSNAME_ASSETS = {"imagenet": ("imagenet_zeroshot.json", "classnames"),
                     "cifar10": ("cifar_zeroshot.json", "cifar10_classnames"),
                     "cifar100": ("cifar_zeroshot.json", "cifar100_classnames")}
SIMPLE_TEMPLATES = ("a photo of a {}.",)
TEMPLATE_SETS = (*_TEMPLATE_ASSETS, "simple")
TFDS_CLASSNAMES = "tfds"  # the dataset's own label names
CLASSNAME_SETS = (*_CLASSNAME_ASSETS, TFDS_CLASSNAMES)

# TFDS dataset -> its (class names, templates); other datasets get DEFAULT_PROMPTS.
DATASET_PROMPTS = {"imagenet2012": ("imagenet", "imagenet80"),
                   "imagenet_v2": ("imagenet", "imagenet80"),
                   "cifar10": ("cifar10", "cifar"),
                   "cifar100": ("cifar100", "cifar")}
DEFAULT_PROMPTS = (TFDS_CLASSNAMES, "imagenet80")


@functools.cache
def _asset(filename: str) -> dict:
  path = importlib.resources.files("clip_jax.evaluation") / "assets" / filename
  return json.loads(path.read_text(encoding="utf-8"))


def templates(name: str) -> tuple[str, ...]:
  """The template set `name` (one of TEMPLATE_SETS); "{}" marks the class name."""
  if name == "simple":
    return SIMPLE_TEMPLATES
  filename, key = _TEMPLATE_ASSETS[name]
  return tuple(_asset(filename)[key])


def classnames(name: str) -> tuple[str, ...]:
  """The curated class names `name` (one of CLASSNAME_SETS but "tfds"), in label order."""
  filename, key = _CLASSNAME_ASSETS[name]
  return tuple(_asset(filename)[key])


def dataset_prompts(dataset: str) -> tuple[str, str]:
  """The default (class name set, template set) of a TFDS dataset."""
  return DATASET_PROMPTS.get(dataset, DEFAULT_PROMPTS)
