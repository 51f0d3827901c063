"""The synthetic world's evaluation images written as benchmark tasks (`benchmark_tasks.
SYNTHETIC_TASKS`), in the benchmark's WebDataset layout: classification by shape (with the
worst of seen and held-out colour-shape pairs) and by colour, and caption retrieval. The images
are `input_pipeline.create_eval_images`' (never training images), the prompts the synthetic
zero-shot evaluation's, so every word is in the world's vocabulary.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile

import numpy as np
import tensorflow as tf

import input_pipeline
from clip_jax import files
from clip_jax import settings
from clip_jax.evaluation import benchmark_data
from clip_jax.evaluation import benchmark_tasks
from clip_jax.evaluation import zero_shot
from input_pipeline.sources import synthetic

# The folders the benchmark looks in for each task (DataComp's naming, `Task.directories`).
SHAPE, COLOUR, CAPTIONS = (benchmark_tasks.TASKS_BY_KEY[key].directories[0] for key in (
    "synthetic/shape", "synthetic/colour", "synthetic/captions"))  # SHAPE: written last


def _benchmark_templates(templates) -> list[str]:
  return [template.replace("{}", "{c}") for template in templates]


def write(data: settings.Data, root: str, *, num_images: int) -> None:
  """The three tasks' data under `root`, for the world of `data` (data.name must be synthetic)."""
  world = synthetic.World.from_settings(data)
  shape, colour, captions = [], [], []
  for batch in input_pipeline.create_eval_images(data, num_images=num_images, batch_size=256):
    for image, shape_label, colour_label, heldout in zip(batch["image"], batch["shape"],
                                                         batch["colour"], batch["heldout"]):
      png = tf.io.encode_png(image).numpy()
      shape.append({"png": png, "cls": str(shape_label).encode(),
                    "npy": benchmark_data.npy_bytes(np.array([heldout], np.int64))})
      colour.append({"png": png, "cls": str(colour_label).encode()})
      captions.append({"png": png, "txt": "\n".join(
          synthetic.eval_captions(world, len(captions))).encode()})
  folder = files.path(root)
  benchmark_data.write_task(str(folder / COLOUR), colour, classnames=world.colours,
                            templates=_benchmark_templates(zero_shot.COLOUR_TEMPLATES))
  benchmark_data.write_task(str(folder / CAPTIONS), captions, dataset_type="retrieval")
  benchmark_data.write_task(str(folder / SHAPE), shape, classnames=world.shapes,
                            templates=_benchmark_templates(zero_shot.SHAPE_TEMPLATES))


def written(data: settings.Data, *, num_images: int, data_dir: str = "") -> str:
  """A folder holding the tasks' data: `data_dir`, written there unless it holds them already
  (`SHAPE`'s nshards.txt), else a temporary folder written once per process and world."""
  if not data_dir:
    return _temporary(data, num_images)
  if not (files.path(data_dir) / SHAPE / benchmark_data.SPLIT / "nshards.txt").exists():
    write(data, data_dir, num_images=num_images)
  return data_dir


_TEMPORARY: dict[str, str] = {}  # repr((data, num_images)) -> folder (settings hold dicts)


def _temporary(data: settings.Data, num_images: int) -> str:
  key = repr((data, num_images))
  if key not in _TEMPORARY:
    _TEMPORARY[key] = tempfile.mkdtemp(prefix="clip_jax_synthetic_tasks.")
    atexit.register(shutil.rmtree, _TEMPORARY[key], ignore_errors=True)
    write(data, _TEMPORARY[key], num_images=num_images)
  return _TEMPORARY[key]
