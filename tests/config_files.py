"""The repository's config files, loaded by path as `--config=<path>` loads them."""

import os

from clip_jax import settings

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs")


def path(name: str) -> str:
  """configs/<name>.py, e.g. "synthetic_demo" or "scaling/synthetic"."""
  return os.path.normpath(os.path.join(CONFIGS, f"{name}.py"))


def load(name: str, argument: str | None = None):
  return settings.load_config_file(path(name), argument)
