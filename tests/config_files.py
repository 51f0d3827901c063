"""The repository's config files, loaded by path as `--config=<path>` loads them."""

import os

from clip_jax import settings

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs")


def path(name: str) -> str:
  """configs/<name>.py, e.g. "synthetic_demo" or "scaling/synthetic"."""
  return os.path.normpath(os.path.join(CONFIGS, f"{name}.py"))


def load(name: str, argument: str | None = None):
  return settings.load_config_file(path(name), argument)



def old_layout(config: dict) -> dict:
  """A config.json as clip_jax wrote it before 2026-12-07: every stream source's keys flat under
  data.* ("" for a feature meaning the source's own default), the synthetic world's nested."""
  data = dict(config["data"])
  sections = {name: data.pop(name) for name in ("webdataset", "tfrecord", "tfds", "csv")}
  flat = {}
  for section in sections.values():
    for key, value in section.items():
      flat.setdefault(key, "" if key.endswith("_feature") else value)
  flat.update(sections.get(data["name"], {}))  # the named source's own values
  return {**config, "data": {**data, **flat}}
