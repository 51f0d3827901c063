"""Pretrained models on disk: a converted checkpoint is a directory with the architecture as JSON
(`model.json`) beside the variables as an Orbax checkpoint (`variables/`); a training workdir
holds its run's config.json beside its checkpoints.

`load` gives everything a notebook needs in one call: the Flax module, its variables, the image
preprocessing and the tokenizer of the model's vocabulary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from clip_jax import checkpoint
from clip_jax import files
from clip_jax import settings
from clip_jax.models import clip as clip_model
from clip_jax.models import configs
from clip_jax.models import positions
from clip_jax import image_preparation

MODEL_FILE = "model.json"
TOKENIZER_DIR = "tokenizer"  # the tokenizer's model file a converted checkpoint carries
WORKDIR_CONFIG = "config.json"  # written by training beside checkpoints/
VARIABLES_DIR = "variables"


class Pretrained(NamedTuple):
  model: clip_model.CLIP
  variables: dict[str, Any]
  preprocess: Callable[[Any], np.ndarray]
  tokenize: Callable[[str | Sequence[str]], np.ndarray]


def save(directory: str, config: configs.CLIPConfig, variables: dict[str, Any],
         source: dict[str, Any] | None = None, tokenizer: str = "clip_bpe",
         tokenizer_file: str | None = None) -> None:
  """Writes `variables`, the architecture `config` and the tokenizer the weights were trained
  with (a data.tokenizer name, and a copy of its model file if it has one, with the options
  file beside it) to a new `directory`."""
  directory = files.path(directory)
  if (directory / VARIABLES_DIR).exists():
    raise FileExistsError(f"{directory} already holds a checkpoint; choose a new --dst.")
  directory.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / VARIABLES_DIR, variables)
  record = {"name": tokenizer}
  if tokenizer_file is not None:
    record["file"] = f"{TOKENIZER_DIR}/{files.path(tokenizer_file).name}"
    (directory / TOKENIZER_DIR).mkdir(exist_ok=True)
    options = files.path(tokenizer_file).parent / files.TOKENIZER_OPTIONS
    for source_file in (tokenizer_file, *([options] if options.exists() else [])):
      (directory / TOKENIZER_DIR / files.path(source_file).name).write_bytes(
          files.read_tokenizer_model(source_file, "the tokenizer model"))
  files.write_text(directory / MODEL_FILE, json.dumps(
      {"model": configs.config_to_dict(config), "source": source or {}, "tokenizer": record},
      indent=2))


def is_converted(path: str) -> bool:
  return (files.path(path) / MODEL_FILE).is_file()


def read_config(directory: str) -> configs.CLIPConfig:
  """The architecture of a directory written by `save`."""
  return configs.config_from_dict(
      json.loads(files.read_text(files.path(directory) / MODEL_FILE))["model"])


def read(directory: str) -> tuple[configs.CLIPConfig, dict[str, Any]]:
  """(architecture, variables as numpy arrays) of a directory written by `save`."""
  config = read_config(directory)
  path = files.path(directory) / VARIABLES_DIR
  with ocp.StandardCheckpointer() as checkpointer:
    stored = checkpointer.metadata(path).item_metadata.tree
    variables = checkpointer.restore(path, checkpoint.on_host(stored))
  return config, jax.tree.map(np.asarray, variables)


def image_views(images, image_size: int,
                view: image_preparation.Preprocessing = image_preparation.Preprocessing()
                ) -> np.ndarray:
  """One image or a list of them (PIL images or uint8 arrays [H, W, 3]) -> their evaluation
  views, uint8 [N, S, S, 3], exactly as evaluation makes them: what the model takes, and a
  quarter of the bytes of standardised floats."""
  with input_pipeline_needed("preprocess"):
    from input_pipeline import preprocessing  # pylint: disable=g-import-not-at-top
  is_batch = isinstance(images, (list, tuple)) or np.ndim(images) == 4
  prepared = []
  for image in images if is_batch else [images]:
    if hasattr(image, "convert"):  # PIL
      image = image.convert("RGB")
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[-1] != 3:
      raise ValueError(f"preprocess takes PIL images or uint8 arrays [H, W, 3]; got "
                       f"{pixels.dtype} {pixels.shape}.")
    prepared.append(np.asarray(preprocessing.eval_view(pixels, image_size, view.resize_mode,
                                                       view.interpolation)))
  return np.stack(prepared)


def make_preprocess(image_size: int,
                    view: image_preparation.Preprocessing = image_preparation.Preprocessing()
                    ) -> Callable[[Any], np.ndarray]:
  """A function from one image or a list of them (PIL images or uint8 arrays [H, W, 3]) to the
  model's float input: float32 [N, S, S, 3], the evaluation view standardised with the
  checkpoint's statistics, as open_clip's `preprocess` gives them (the model also takes the
  uint8 views of `image_views` and standardises them itself, to the same features)."""
  return lambda images: np.asarray(clip_model.standardize_images(
      image_views(images, image_size, view), view))


def is_workdir(path: str) -> bool:
  return ((files.path(path) / WORKDIR_CONFIG).is_file()
          and (files.path(path) / checkpoint.DIRECTORY).is_dir())


def read_workdir(workdir: str, use_ema: bool = False, step: int | None = None
                 ) -> tuple[settings.Run, clip_model.CLIP, dict[str, Any]]:
  """(run settings, model, variables as numpy arrays) of a training workdir's checkpoint of
  `step` (default: the latest); with `use_ema`, the moving average of the parameters (a run with
  `ema_decay` > 0).

  Only the run's config is parsed: nothing that training checks at start-up (a fine-tuning
  source, the evaluators' data) needs to be there.
  """
  config_path = files.path(workdir) / WORKDIR_CONFIG
  try:
    config = json.loads(config_path.read_text())
  except ValueError as error:
    raise ValueError(f"{config_path} is not valid JSON ({error}): it holds the settings of the "
                     "checkpoints beside it; restore it from a copy.") from None
  run = settings.parse(settings.upgraded(config))
  variables, _ = checkpoint.restore_variables(workdir, step, use_ema=use_ema)
  return run, clip_model.CLIP(run.model.architecture), variables


def variables_digest(variables: dict[str, Any]) -> str:
  """The SHA-256 of variables (names, dtypes, shapes, values): which weights outputs were made
  with, whatever file or step they came from."""
  digest = hashlib.sha256()
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    array = np.ascontiguousarray(leaf)
    digest.update(f"{jax.tree_util.keystr(key_path)} {array.dtype} {array.shape}\n".encode())
    digest.update(array.reshape(-1).view(np.uint8))
  return digest.hexdigest()


def read_tokenizer(directory: str) -> tuple[str, str | None]:
  """(data.tokenizer name, the path of its model file or None) of a converted checkpoint; CLIP's
  BPE for files written before checkpoints carried their tokenizer."""
  record = json.loads(files.read_text(files.path(directory) / MODEL_FILE)).get(
      "tokenizer", {"name": "clip_bpe"})
  return record["name"], str(files.path(directory) / record["file"]) if "file" in record else None


def checkpoint_data(directory: str, architecture: configs.CLIPConfig,
                    data: settings.Data = settings.Data()) -> settings.Data:
  """The data settings a converted checkpoint is used with: the tokenizer it carries (CLIP's BPE
  where model.json names none, as files written before checkpoints carried one) at the model's
  context length and image size, the rest (e.g. the synthetic world of evaluators) from `data`."""
  tokenizer, model_file = read_tokenizer(directory)
  return dataclasses.replace(data, tokenizer=tokenizer, tokenizer_model=model_file or "",
                             image_size=architecture.vision.image_size,
                             context_length=architecture.text.context_length)


def resized(model: clip_model.CLIP, variables: dict[str, Any], data: settings.Data,
            image_size: int | None = None, context_length: int | None = None,
            position_interpolation: str | None = None
            ) -> tuple[clip_model.CLIP, dict[str, Any], settings.Data]:
  """The model at another image size and/or text length (None: its own), its learned positions
  interpolated (`positions`: `position_interpolation`, by default its family's way), and the
  data settings that feed it."""
  if image_size is None and context_length is None:
    return model, variables, data
  architecture = positions.resized_config(model.config, image_size, context_length)
  variables = positions.resize_variables(variables, model.config, architecture,
                                         position_interpolation)
  return clip_model.CLIP(architecture), variables, dataclasses.replace(
      data, image_size=architecture.vision.image_size,
      context_length=architecture.text.context_length)


def load(path: str, use_ema: bool = False, step: int | None = None, *,
         image_size: int | None = None, context_length: int | None = None,
         position_interpolation: str | None = None) -> Pretrained:
  """(model, variables, preprocess, tokenize) of a converted checkpoint or a training workdir.

  A converted checkpoint tokenizes with the tokenizer it carries (CLIP's BPE, SigLIP's
  SentencePiece model); a workdir with its run's tokenizer (e.g. the synthetic dataset's words)
  and evaluation view of images. `use_ema` takes a workdir's moving
  average of the parameters (a run with `ema_decay` > 0) instead of its parameters, and `step` a
  workdir's checkpoint of that step instead of its latest. `image_size` and `context_length`
  give the model at another resolution or text length (`resized`).
  """
  for name, value, allowed in (("use_ema", use_ema, False), ("step", step, None)):
    if value != allowed and not is_workdir(path):
      raise ValueError(f"{name}={value!r} with {path}, which is not a training workdir; allowed: "
                       f"{name}={allowed} (a converted checkpoint holds one set of parameters).")
  if is_converted(path):
    architecture, variables = read(path)
    model = clip_model.CLIP(architecture)
    data = checkpoint_data(path, architecture)
  elif is_workdir(path):
    run, model, variables = read_workdir(path, use_ema, step)
    data = run.data
  else:
    raise FileNotFoundError(f"{path} is neither a converted checkpoint (no {MODEL_FILE}: see "
                            "`python -m clip_jax.convert`) nor a training workdir (no "
                            f"{WORKDIR_CONFIG} beside checkpoints/).")
  model, variables, data = resized(model, variables, data, image_size, context_length,
                                   position_interpolation)
  return Pretrained(model, variables,
                    make_preprocess(data.image_size, model.config.preprocessing),
                    make_tokenize(data))


def make_tokenize(data: settings.Data) -> Callable[[str | Sequence[str]], np.ndarray]:
  """A function from one text or a list of them to int32 ids [N, data.context_length], with the
  tokenizer of `data`, built on the first call: loading a model does not need TensorFlow."""
  tokenizer = None

  def tokenize(texts: str | Sequence[str]) -> np.ndarray:
    nonlocal tokenizer
    if tokenizer is None:
      with input_pipeline_needed("tokenize"):
        from input_pipeline import tokenizers  # pylint: disable=g-import-not-at-top
      tokenizer = tokenizers.create_tokenizer(data)
    return tokenizer.tokenize([texts] if isinstance(texts, str) else list(texts))

  return tokenize


@contextlib.contextmanager
def input_pipeline_needed(user: str):
  """Around an import of the input pipeline, made on first use: it brings TensorFlow, which
  loading a model and running it do not need (a bare accelerator host may not have it). A
  failure says what `user` needs and what works without it."""
  try:
    yield
  except ImportError as error:
    raise ImportError(
        f"{user} needs the input pipeline, which needs TensorFlow ({error}); install clip_jax "
        "with its dependencies (pip install -e .), or give the model uint8 images [N, S, S, 3] "
        "and token ids of your own.") from error
