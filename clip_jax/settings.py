"""A run's settings: the config, parsed once into frozen dataclasses with every default filled in.

A config file's `get_config()` returns an `ml_collections.ConfigDict` (what `--config=<file>` loads,
so that `--config.<key>=<value>` can set any key). `default_config()` has every key of every
section at its default, so a config file starts from it and sets only what differs, and any
documented key exists to be set from the command line. `parse` turns such a config into a `Run`;
everything downstream (training, evaluation, sweeps, loading a workdir) receives a `Run` or one of
its sections and never reads the ConfigDict again.

Each section's defaults are written here and nowhere else: the dataclass fields below. A bad key
or value raises a ValueError naming the key, the value and the values allowed. `parse` is pure:
checks that touch files or datasets (a fine-tuning checkpoint, the evaluators' TFDS data) belong
to training start-up (`clip_jax.train`), so a workdir loads wherever its config parses.

This module imports nothing of clip_jax but the model table, so every other module may import it.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
import typing
from typing import Any, Callable, Mapping

import ml_collections
from ml_collections import config_dict

from clip_jax import losses
from clip_jax.models import configs as model_configs
from clip_jax.models import towers


def is_count(value: Any) -> bool:
  """An int that is not a bool (a ConfigDict holds True where a count was meant, too)."""
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
  return isinstance(value, str)


def _one_of(*choices) -> tuple[Callable[[Any], bool], str]:
  return (lambda value: value in choices), ", ".join(repr(choice) for choice in choices)


_COUNT = (lambda value: is_count(value) and value >= 0), "integers >= 0"
_POSITIVE_COUNT = (lambda value: is_count(value) and value >= 1), "integers >= 1"
_POSITIVE = (lambda value: _is_number(value) and value > 0), "numbers > 0"
_FRACTION = (lambda value: _is_number(value) and 0 <= value < 1), "numbers in [0, 1)"
_TEXT = _is_text, "strings"
_FLAG = (lambda value: isinstance(value, bool)), "True, False"
_ANY = (lambda value: True), "anything"


def _setting(default: Any, rule: tuple[Callable[[Any], bool], str] = _ANY) -> Any:
  """A dataclass field with its default and the rule its values obey (checked by `parse`)."""
  is_valid, allowed = rule
  if isinstance(default, (tuple, dict)):
    return dataclasses.field(default_factory=lambda: default,
                             metadata=dict(is_valid=is_valid, allowed=allowed))
  return dataclasses.field(default=default, metadata=dict(is_valid=is_valid, allowed=allowed))


# ---------------------------------------------------------------------------------------------
# The sections.

# A loss is a name registered in clip_jax.losses (where each is defined, or by a plug-in).
_REGISTERED_LOSS = ((lambda value: value in losses.names()),
                    lambda: ", ".join(repr(name) for name in losses.names()))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Model:
  """The architecture: a named model (clip_jax.models.configs.MODELS) with `model.overrides`.

  In the config, `model.overrides` has every architecture field (embed_dim, activation, dtype,
  remat, scan, vision.*, text.*) unset; a field set there replaces the named model's.
  """
  name: str
  architecture: model_configs.CLIPConfig
  # Modules imported before the loss and the model are read: plug-ins registering their own kinds
  # of image tower and losses (docs/extending.md), so that a workdir's config.json builds its
  # model anywhere.
  plugins: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Loss:
  """The contrastive loss; blockwise=True computes it tile by tile (memory O(b D + tile^2) per
  device instead of O(b N), the same values and gradients; clip_jax/blockwise_losses.py)."""
  name: str = _setting("softmax", _REGISTERED_LOSS)
  blockwise: bool = _setting(False, _FLAG)
  tile_size: int = _setting(1024, _POSITIVE_COUNT)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Optim:
  """AdamW with linear warm-up and cosine decay (clip_jax/optim.py). The defaults are the paper's
  for ViT-B/32 (Radford et al. 2021, Table 20), with gradients clipped at norm 1."""
  learning_rate: float = _setting(5e-4, _POSITIVE)
  b1: float = _setting(0.9, _FRACTION)
  b2: float = _setting(0.98, _FRACTION)
  eps: float = _setting(1e-6, _POSITIVE)
  weight_decay: float = _setting(0.2, ((lambda value: _is_number(value) and value >= 0),
                                       "numbers >= 0"))
  warmup_steps: int = _setting(2_000, _COUNT)  # < total_steps, checked by `parse`.
  grad_clip_norm: float = _setting(1.0, ((lambda value: _is_number(value) and value >= 0),
                                         "0 (off) or a positive number"))
  end_learning_rate: float = _setting(0.0, ((lambda value: _is_number(value) and value >= 0),
                                            "numbers from 0 to optim.learning_rate"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Flip:
  """FLIP (clip_jax/flip.py, a ViT only): mask_ratio drops that fraction of each image's patches in
  training; the last unmasked_steps steps train on whole images again. 0.0 is plain CLIP."""
  mask_ratio: float = _setting(0.0, ((lambda value: _is_number(value) and 0 <= value < 1),
                                     "numbers from 0 (no masking) up to, not including, 1"))
  unmasked_steps: int = _setting(0, _COUNT)  # <= total_steps, checked by `parse`.


@dataclasses.dataclass(frozen=True, kw_only=True)
class Finetune:
  """Fine-tuning (clip_jax/finetune.py): start from a directory written by
  `python -m clip_jax.convert` ("" trains from scratch); LiT locks a tower but its last N blocks."""
  checkpoint: str = _setting("", _TEXT)
  lock_image: bool = _setting(False, _FLAG)
  image_unlocked_blocks: int = _setting(0, _COUNT)
  lock_text: bool = _setting(False, _FLAG)
  text_unlocked_blocks: int = _setting(0, _COUNT)
  # A checkpoint of another image size or text length: how its positions are interpolated ("":
  # its image tower family's own way; clip_jax/models/positions.py).
  position_interpolation: str = _setting("", _one_of("", *towers.POSITION_INTERPOLATIONS))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Mesh:
  """The ('data', 'fsdp') device mesh (clip_jax/sharding.py); one axis may be -1 for the rest.
  Parameters of at least min_shard_size elements are split over `fsdp`."""
  data: int = _setting(-1, ((lambda value: is_count(value) and (value >= 1 or value == -1)),
                            "integers >= 1, or -1 for the remaining devices"))
  fsdp: int = _setting(1, ((lambda value: is_count(value) and (value >= 1 or value == -1)),
                           "integers >= 1, or -1 for the remaining devices"))
  min_shard_size: int = _setting(2**14, _POSITIVE_COUNT)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Checkpoint:
  every_steps: int = _setting(2_000, _POSITIVE_COUNT)
  max_to_keep: int = _setting(2, _POSITIVE_COUNT)
  async_save: bool = _setting(True, _FLAG)


DISTRIBUTED_MODES = ("off", "auto", "explicit")


def _is_address(value: Any) -> bool:
  host, _, port = str(value).rpartition(":")
  return value == "" or (bool(host) and port.isdigit())


@dataclasses.dataclass(frozen=True, kw_only=True)
class Distributed:
  """Several processes (clip_jax/distributed.py): mode "auto" on a TPU pod slice or under SLURM /
  Open MPI; "explicit" with coordinator_address ("host:port" of process 0), num_processes and
  process_id. local_device_ids: this process's GPUs, () for JAX's choice. Unset keys are "", 0,
  -1 and ()."""
  mode: str = _setting("off", _one_of(*DISTRIBUTED_MODES))
  coordinator_address: str = _setting("", (_is_address, "'host:port' of process 0"))
  num_processes: int = _setting(0, (lambda value: is_count(value) and value >= 0,
                                    "integers >= 1"))
  process_id: int = _setting(-1, (lambda value: is_count(value) and value >= -1,
                                  "integers from 0 to num_processes - 1"))
  local_device_ids: tuple[int, ...] = _setting(
      (), (lambda value: isinstance(value, tuple) and all(
          is_count(device) and device >= 0 for device in value),
           "a tuple of this host's device ids, () for all"))


SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "diamond", "ring")
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "purple")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Synthetic:
  """The built-in synthetic world (input_pipeline/sources/synthetic.py): the shapes and colours
  drawn, the colour-shape diagonals held out of training, and what captions mention."""
  shapes: tuple[str, ...] = _setting(SHAPES[:6], (
      lambda value: isinstance(value, tuple) and set(value) <= set(SHAPES) and 2 <= len(value)
      == len(set(value)), f"two or more distinct names of {', '.join(SHAPES)}"))
  colours: tuple[str, ...] = _setting(COLOURS[:6], (
      lambda value: isinstance(value, tuple) and set(value) <= set(COLOURS) and 2 <= len(value)
      == len(set(value)), f"two or more distinct names of {', '.join(COLOURS)}"))
  holdout_diagonals: tuple[int, ...] = _setting((0,), (
      lambda value: isinstance(value, tuple) and all(is_count(item) for item in value),
      "a tuple of fewer diagonals than colours, each in 0..len(colours) - 1"))
  shape_only_captions: float = _setting(0.4, _FRACTION)
  colour_only_captions: float = _setting(0.1, _FRACTION)


DATA_SOURCES = ("synthetic", "webdataset", "tfrecord", "tfds", "csv", "mixture")
STREAM_SOURCES = DATA_SOURCES[1:-1]  # What a mixture mixes.
TOKENIZERS = ("clip_bpe", "sentencepiece", "siglip", "words")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Data:
  """The training data (input_pipeline/): a source and its keys, then the shared augmentation,
  tokenizer and shuffling. image_size and context_length follow the model unless set."""
  name: str = _setting("synthetic", _one_of(*DATA_SOURCES))
  image_size: int = _setting(None, _POSITIVE_COUNT)
  context_length: int = _setting(None, _POSITIVE_COUNT)
  tokenizer: str = _setting("clip_bpe", _one_of(*TOKENIZERS))
  # A SentencePiece .model file (tokenizer=sentencepiece or siglip).
  tokenizer_model: str = _setting("", _TEXT)
  seed: int = _setting(0, _COUNT)
  # Random resized crop: the fraction of the image area kept; exact_resize=True: PIL's
  # antialiased bicubic (open_clip's pixels), about 2x slower.
  crop_scale: tuple[float, float] = _setting((0.9, 1.0), (
      lambda value: isinstance(value, tuple) and len(value) == 2
      and all(_is_number(item) for item in value) and 0 < value[0] <= value[1] <= 1,
      "(low, high) with 0 < low <= high <= 1"))
  exact_resize: bool = _setting(False, _FLAG)
  cycle_length: int = _setting(8, _POSITIVE_COUNT)  # Shards read at once by each process.
  # Bounds on what a record from a stranger may take (docs/data.md): a tar member of more bytes
  # is passed over unread (256 MiB holds an uncompressed image at the pixel limit), an image whose
  # header declares more pixels (PIL's Image.MAX_IMAGE_PIXELS) is refused before decoding; the
  # sample is then skipped and counted.
  max_member_bytes: int = _setting(256 << 20, _POSITIVE_COUNT)
  max_image_pixels: int = _setting(89_478_485, _POSITIVE_COUNT)
  shuffle_window: int = _setting(2_048, _POSITIVE_COUNT)  # Records shuffled together.
  # webdataset and tfrecord: a brace pattern, a glob or a list of paths (local or gs://).
  files: str | tuple[str, ...] = _setting("", (
      lambda value: _is_text(value) or (isinstance(value, tuple) and all(map(_is_text, value))),
      "a brace pattern, a glob or a list of paths"))
  image_extensions: tuple[str, ...] = _setting(("jpg", "jpeg", "png", "webp"), (
      lambda value: isinstance(value, tuple) and value and all(map(_is_text, value)),
      "a tuple of file extensions, the first present is used"))  # webdataset
  caption_extension: str = _setting("txt", _TEXT)  # webdataset
  # tfrecord and tfds; "" for the source's own default (tfrecord: jpg, txt; tfds: image,
  # captions/text). A tfds feature is a path into the example.
  image_feature: str = _setting("", _TEXT)
  caption_feature: str = _setting("", _TEXT)
  # tfds: a dataset, its split (slicing works: "train[:90%]") and data_dir ("" for TFDS's
  # default); mock_examples=N trains on N random examples of its features.
  dataset: str = _setting("", _TEXT)
  split: str = _setting("train", _TEXT)
  data_dir: str = _setting("", _TEXT)
  mock_examples: int = _setting(0, _COUNT)
  # csv: a table of image paths and captions (open_clip's --dataset-type csv).
  file: str = _setting("", _TEXT)
  separator: str = _setting("\t", _TEXT)
  image_column: str = _setting("filepath", _TEXT)
  caption_column: str = _setting("title", _TEXT)
  synthetic: Synthetic = dataclasses.field(default_factory=Synthetic)
  # mixture: sources by name, each with its `name`, `weight` and the data keys that differ from
  # the shared ones (made with `data_source(...)`). `weight` counts only in a mixture.
  weight: float = _setting(1.0, _POSITIVE)
  sources: Mapping[str, Data] = dataclasses.field(default_factory=dict)


EVALUATOR_TYPES = ("zero_shot", "retrieval", "linear_probe")
SYNTHETIC = "synthetic"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Evaluator:
  """One evaluator of `evals` (clip_jax/evaluation/evaluators.py). `dataset` is "synthetic" (new
  images of the built-in world: data.name must be synthetic) or a TFDS dataset. every_steps=0
  runs it only at the end. classnames and templates: "" for the dataset's own, or a name of
  clip_jax.evaluation.prompts."""
  type: str = _setting("zero_shot", _one_of(*EVALUATOR_TYPES))
  dataset: str = _setting(SYNTHETIC, ((lambda value: _is_text(value) and value),
                                      f"{SYNTHETIC!r} or a TFDS dataset name"))
  every_steps: int = _setting(0, ((lambda value: is_count(value) and value >= 0),
                                  "integers >= 0 (0: only at the end)"))
  batch_size: int = _setting(256, _POSITIVE_COUNT)  # Images or texts encoded at once.
  num_images: int = _setting(1000, _POSITIVE_COUNT)  # synthetic
  split: str = _setting("", _TEXT)  # zero_shot, retrieval
  train_split: str = _setting("", _TEXT)  # linear_probe
  validation_split: str = _setting("", _TEXT)
  test_split: str = _setting("", _TEXT)
  data_dir: str = _setting("", _TEXT)
  mock_examples: int = _setting(0, _COUNT)
  image_feature: str = _setting("image", _TEXT)
  label_feature: str = _setting("label", _TEXT)
  caption_feature: str = _setting("captions/text", _TEXT)
  classnames: str = _setting("", _TEXT)
  templates: str = _setting("", _TEXT)


_TFDS_KEYS = ("data_dir", "mock_examples", "image_feature")
# (type, on synthetic data) -> (the splits it needs, the other keys it takes).
EVALUATOR_KEYS = {
    ("zero_shot", False): (("split",), (*_TFDS_KEYS, "label_feature", "classnames", "templates")),
    ("retrieval", False): (("split",), (*_TFDS_KEYS, "caption_feature")),
    ("linear_probe", False): (("train_split", "validation_split", "test_split"),
                              (*_TFDS_KEYS, "label_feature")),
    ("zero_shot", True): ((), ("num_images",)),
    ("retrieval", True): ((), ("num_images",)),
}
EVALUATOR_COMMON_KEYS = ("type", "dataset", "every_steps", "batch_size")

NONFINITE_POLICIES = ("stop", "skip")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run:
  """Everything a training run is. The defaults are the paper's ViT-B/32 run: 32 epochs of 400 M
  pairs (12.8 B samples) at a global batch of 32,768."""
  seed: int = _setting(0, _COUNT)
  total_steps: int = _setting(390_625, _POSITIVE_COUNT)
  global_batch_size: int = _setting(32_768, _POSITIVE_COUNT)
  # Each step's batch in that many micro-batches, with the same loss and update
  # (clip_jax.train_step): memory follows the micro-batch, at the cost of one more forward pass.
  accumulation_steps: int = _setting(1, _POSITIVE_COUNT)
  # > 0: the train state also keeps an exponential moving average of the parameters, updated
  # every step as ema = ema_decay * ema + (1 - ema_decay) * params; evaluations report both.
  ema_decay: float = _setting(0.0, _FRACTION)
  log_every_steps: int = _setting(100, _POSITIVE_COUNT)
  # "stop": a non-finite loss or gradient stops the run at its last good checkpoint; "skip": the
  # update is dropped and training goes on.
  nonfinite: str = _setting("stop", _one_of(*NONFINITE_POLICIES))
  # With nonfinite="skip": the run stops after this many skipped steps in a row (a run whose every
  # step is skipped is broken, not unlucky).
  max_consecutive_skips: int = _setting(20, _POSITIVE_COUNT)
  model: Model
  data: Data = dataclasses.field(default_factory=Data)
  loss: Loss = dataclasses.field(default_factory=Loss)
  optim: Optim = dataclasses.field(default_factory=Optim)
  flip: Flip = dataclasses.field(default_factory=Flip)
  finetune: Finetune = dataclasses.field(default_factory=Finetune)
  mesh: Mesh = dataclasses.field(default_factory=Mesh)
  checkpoint: Checkpoint = dataclasses.field(default_factory=Checkpoint)
  distributed: Distributed = dataclasses.field(default_factory=Distributed)
  evals: Mapping[str, Evaluator] = dataclasses.field(default_factory=dict)


DEFAULT_MODEL = "ViT-B-32"
_SECTIONS = dict(data=Data, loss=Loss, optim=Optim, flip=Flip, finetune=Finetune, mesh=Mesh,
                 checkpoint=Checkpoint, distributed=Distributed)


# ---------------------------------------------------------------------------------------------
# Configs: ConfigDicts with every key, for config files and the command line.

def _placeholder_type(annotation: Any) -> type:
  """The type ml_collections parses a command-line value of an unset key as."""
  if annotation in (int, float, str, bool):
    return annotation
  if typing.get_origin(annotation) is tuple:
    return tuple
  options = [option for option in typing.get_args(annotation) if option is not type(None)]
  if len(options) == 1:
    return _placeholder_type(options[0])
  return object  # Several types: a Python literal (12, (3, 4, 6, 3)), or else a string.


def _fields_config(cls, given: Mapping[str, Any],
                   unset_defaults: bool) -> ml_collections.ConfigDict:
  """A ConfigDict with every field of `cls`: `given` values, else the default (or, with
  `unset_defaults`, an unset typed placeholder, so that a later merge can tell given from not)."""
  hints = typing.get_type_hints(cls)
  unknown = sorted(set(given) - {field.name for field in dataclasses.fields(cls)})
  if unknown:
    raise ValueError(f"{unknown[0]}={given[unknown[0]]!r} is not a key of {cls.__name__}; "
                     f"allowed: {', '.join(field.name for field in dataclasses.fields(cls))}.")
  config = ml_collections.ConfigDict()
  for field in dataclasses.fields(cls):
    if field.name in given:
      value = given[field.name]
    elif field.name == "sources" or (dataclasses.is_dataclass(hints[field.name])
                                     and unset_defaults):
      value = ml_collections.ConfigDict()
    elif dataclasses.is_dataclass(hints[field.name]):
      value = _fields_config(hints[field.name], {}, unset_defaults=False)
    elif unset_defaults or _default(field) is None:
      value = config_dict.placeholder(_placeholder_type(hints[field.name]))
    else:
      value = _default(field)
    config[field.name] = value
  return config


def _default(field: dataclasses.Field) -> Any:
  if field.default_factory is not dataclasses.MISSING:
    return field.default_factory()
  return field.default


def _architecture_config() -> ml_collections.ConfigDict:
  """model.overrides: every architecture field, unset (the named model's value)."""
  vision_fields: dict[str, Any] = {"kind": str}
  for kind in towers.kinds():
    for name, annotation in typing.get_type_hints(towers.of_kind(kind).config).items():
      # A field of two kinds may differ in type: `layers` is a count for a ViT and a tuple of
      # counts for a ResNet.
      vision_fields[name] = object if name in vision_fields else _placeholder_type(annotation)
  overrides = ml_collections.ConfigDict()
  for name, annotation in typing.get_type_hints(model_configs.CLIPConfig).items():
    if name in model_configs.RECORDS:
      fields = (vision_fields if name == "vision" else
                {key: _placeholder_type(value) for key, value in
                 typing.get_type_hints(annotation).items()})
      overrides[name] = ml_collections.ConfigDict(
          {key: config_dict.placeholder(kind) for key, kind in fields.items()})
    else:
      overrides[name] = config_dict.placeholder(_placeholder_type(annotation))
  return overrides


def default_config() -> ml_collections.ConfigDict:
  """Every key of every section at its default: what config files start from."""
  config = ml_collections.ConfigDict()
  for field in dataclasses.fields(Run):
    if field.name not in ("model", "evals", *_SECTIONS):
      config[field.name] = field.default
  config.model = ml_collections.ConfigDict(dict(name=DEFAULT_MODEL, plugins=(),
                                                overrides=_architecture_config()))
  for name, cls in _SECTIONS.items():
    config[name] = _fields_config(cls, {}, unset_defaults=False)
  config.evals = ml_collections.ConfigDict()
  return config


def evaluator(**given) -> ml_collections.ConfigDict:
  """One entry of `config.evals`, with every evaluator key (those not given unset), so that each
  can be set from the command line: `config.evals.imagenet = settings.evaluator(...)`."""
  return _fields_config(Evaluator, given, unset_defaults=True)


def data_source(**given) -> ml_collections.ConfigDict:
  """One source of a mixture (`config.data.sources.<name>`): its `name`, `weight` and the data
  keys that differ from the shared ones; every other data key is there, unset."""
  for nested in ("sources", "synthetic"):
    if nested in given:
      raise ValueError(f"{nested} is not a key of a mixture's source; allowed: the keys of a "
                       "stream source.")
  config = _fields_config(Data, given, unset_defaults=True)
  del config["sources"], config["synthetic"]
  return config


def load_config_file(path: str, argument: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(argument)` of a config file, as `--config=<path>:<argument>` loads it.

  Config files build on each other through this (not through `import configs...`), so that they
  work from any working directory once the package is installed.
  """
  spec = importlib.util.spec_from_file_location(
      f"_config_{os.path.splitext(os.path.basename(path))[0]}", path)
  if spec is None or not os.path.isfile(path):
    raise ValueError(f"config file {path!r} does not exist; allowed: the path of a Python file "
                     "with get_config().")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if argument is None else module.get_config(argument)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing (`app.run(main, flags_parser=parse_flags)`) for programs with a
  `--config` file flag: an override that names no setting (`--config.modle.name=...`) ends in a
  usage error naming it, where ml_collections raises a KeyError or AttributeError (for the last
  name of the path) that absl shows as a traceback."""
  from absl import app  # pylint: disable=g-import-not-at-top
  try:
    return app.parse_flags_with_usage(argv)
  except (KeyError, AttributeError) as error:
    # ml_collections' message: "'modle'\nDid you mean \"model\" instead of \"modle\"?", in a
    # KeyError, which the AttributeError wraps.
    detail = error.args[0] if error.args else ""
    if isinstance(detail, KeyError):
      detail = detail.args[0] if detail.args else ""
    missing, *hint = str(detail).split("\n")
    key = missing.strip("'")
    flag = next((argument.split("=", 1)[0] for argument in argv[1:]
                 if argument.startswith("--config.")
                 and key in argument.split("=", 1)[0].split(".")), None)
    if flag is None:  # Not an override's: the config file's own error.
      raise
    sys.stderr.write(f"FATAL Flags parsing error: {flag}: {key!r} is not a setting. "
                     f"{' '.join(hint)}\n"
                     "Pass --helpshort or --helpfull to see help on flags.\n")
    sys.exit(1)


def sibling_config(config_file: str, name: str,
                   argument: str | None = None) -> ml_collections.ConfigDict:
  """The config file `name` beside `config_file` (a config's own `__file__`)."""
  return load_config_file(os.path.join(os.path.dirname(os.path.abspath(config_file)), name),
                          argument)


# ---------------------------------------------------------------------------------------------
# Parsing.

def _plain(value: Any) -> Any:
  """Nested dicts, tuples for lists, placeholders resolved: what parsing reads."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {key: _plain(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return tuple(_plain(item) for item in value)
  return value


def _given(values: Mapping[str, Any] | None) -> dict[str, Any]:
  """The keys set (not None) of a section."""
  return {key: value for key, value in (values or {}).items() if value is not None}


def _check_value(key: str, field: dataclasses.Field, value: Any) -> None:
  if not field.metadata["is_valid"](value):
    allowed = field.metadata["allowed"]  # a text, or for a registry a function giving it
    raise ValueError(f"{key}={value!r}; allowed: {allowed() if callable(allowed) else allowed}.")


def _section(cls, values: Mapping[str, Any] | None, key: str, **resolved) -> Any:
  """`cls` from a section's values over its defaults, every value checked against its rule.

  `resolved` gives fields that the caller has parsed itself (nested sections)."""
  given = _given(values)
  names = [field.name for field in dataclasses.fields(cls)]
  unknown = sorted(set(given) - set(names))
  if unknown:
    raise ValueError(f"{key}.{unknown[0]}={given[unknown[0]]!r} is not a setting; allowed: "
                     f"{', '.join(names)}.")
  for field in dataclasses.fields(cls):
    if field.name in given and field.name not in resolved:
      _check_value(f"{key}.{field.name}", field, given[field.name])
  return cls(**{name: value for name, value in given.items() if name not in resolved}, **resolved)


def _field(cls, name: str) -> dataclasses.Field:
  return next(field for field in dataclasses.fields(cls) if field.name == name)


def _import_plugins(model: Mapping[str, Any]) -> tuple[str, ...]:
  """Imports model.plugins' modules (which register their towers and losses); their names."""
  plugins = tuple(_given(model).get("plugins") or ())
  for plugin in plugins:
    try:
      importlib.import_module(plugin)
    except ImportError as error:
      raise ValueError(f"model.plugins: {plugin!r} does not import ({error}); allowed: modules "
                       "on the Python path.") from None
  return plugins


def _architecture(model: Mapping[str, Any], loss_name: str) -> Model:
  given = _given(model)
  unknown = sorted(set(given) - {"name", "overrides", "plugins"})
  if unknown:
    raise ValueError(f"model.{unknown[0]}={given[unknown[0]]!r} is not a setting; allowed: name, "
                     "overrides, plugins.")
  plugins = _import_plugins(given)
  overrides = _given(given.get("overrides"))
  for record in model_configs.RECORDS:
    if record in overrides:
      overrides[record] = _given(overrides[record])
      if not overrides[record]:
        del overrides[record]
  name = given.get("name", DEFAULT_MODEL)
  architecture = model_configs.get_model_config(
      name, **{**losses.of(loss_name).model_fields, **overrides})
  return Model(name=name, architecture=architecture, plugins=plugins)


def _data(values: Mapping[str, Any] | None, architecture: model_configs.CLIPConfig,
          require_source: bool = True) -> Data:
  """The data section; image_size and context_length follow the model unless set. Without
  `require_source`, a source may leave what it reads from unset (its files, say)."""
  given = _given(values)
  model_sizes = dict(image_size=architecture.vision.image_size,
                     context_length=architecture.text.context_length)
  for key, expected in model_sizes.items():
    if given.get(key, expected) != expected:
      raise ValueError(f"data.{key}={given[key]} but the model takes {expected}; allowed: "
                       f"{expected} (or leave data.{key} unset to follow the model).")
  synthetic = _section(Synthetic, given.get("synthetic"), "data.synthetic")
  if len(set(synthetic.holdout_diagonals)) >= len(synthetic.colours) or any(
      not 0 <= diagonal < len(synthetic.colours) for diagonal in synthetic.holdout_diagonals):
    raise ValueError(f"data.synthetic.holdout_diagonals={synthetic.holdout_diagonals!r}; allowed: "
                     f"fewer than {len(synthetic.colours)} distinct values, each in "
                     f"0..{len(synthetic.colours) - 1}, so that every colour is seen with some "
                     "shape.")
  if synthetic.shape_only_captions + synthetic.colour_only_captions > 1:
    raise ValueError(f"data.synthetic.shape_only_captions={synthetic.shape_only_captions} and "
                     f"colour_only_captions={synthetic.colour_only_captions}; allowed: a sum <= 1.")
  shared = {key: value for key, value in given.items() if key not in ("synthetic", "sources")}
  sources = {}
  for part_name, part in sorted((given.get("sources") or {}).items()):
    key = f"data.sources.{part_name}"
    part = _given(part)
    for nested in ("sources", "synthetic"):
      if nested in part:
        raise ValueError(f"{key}.{nested} is not a setting of a mixture's source; allowed: the "
                         "keys of a stream source.")
    merged = _section(Data, {**shared, **part, **model_sizes}, key)
    if merged.name not in STREAM_SOURCES:
      raise ValueError(f"{key}.name={merged.name!r}; allowed: {', '.join(STREAM_SOURCES)}.")
    if require_source:
      _check_source(merged, key)
    sources[part_name] = merged
  data = _section(Data, {**given, **model_sizes}, "data", synthetic=synthetic, sources=sources)
  if require_source:
    _check_source(data, "data")
  if (data.name == "mixture") != bool(sources):
    raise ValueError(f"data.name={data.name!r} with {len(sources)} data.sources; allowed: "
                     "data.name='mixture' with one or more data.sources, or another source "
                     "without them.")
  if data.tokenizer in ("sentencepiece", "siglip") and not data.tokenizer_model:
    raise ValueError(f"data.tokenizer_model='': data.tokenizer={data.tokenizer!r} needs the path "
                     "of a SentencePiece .model file.")
  return data


# The key each stream source cannot do without, and what it takes.
_REQUIRED_SOURCE_KEYS = dict(
    webdataset=("files", "a brace pattern, a glob or a list of tar files"),
    tfrecord=("files", "a brace pattern, a glob or a list of TFRecord files"),
    tfds=("dataset", "a TFDS dataset name"),
    csv=("file", "the path of a CSV/TSV table"))


def _check_source(data: Data, key: str) -> None:
  if data.name in _REQUIRED_SOURCE_KEYS:
    required, allowed = _REQUIRED_SOURCE_KEYS[data.name]
    if not getattr(data, required):
      raise ValueError(f"{key}.{required} is empty, and data.name={data.name!r} reads from it; "
                       f"allowed: {allowed}.")


def _evaluator(name: str, values: Mapping[str, Any] | None) -> Evaluator:
  key = f"evals.{name}"
  if not isinstance(values, Mapping):
    raise ValueError(f"{key}={values!r}; allowed: a dict of evaluator settings.")
  given = _given(values)
  evaluator_type = given.get("type", _field(Evaluator, "type").default)
  dataset = given.get("dataset", SYNTHETIC)
  for common in ("type", "dataset"):
    if common in given:
      _check_value(f"{key}.{common}", _field(Evaluator, common), given[common])
  on_synthetic = dataset == SYNTHETIC
  if (evaluator_type, on_synthetic) not in EVALUATOR_KEYS:
    raise ValueError(f"{key}.dataset={dataset!r} with type={evaluator_type!r}; allowed: a TFDS "
                     "image-label dataset.")
  splits, optional = EVALUATOR_KEYS[evaluator_type, on_synthetic]
  allowed = (*EVALUATOR_COMMON_KEYS, *splits, *optional)
  unknown = sorted(set(given) - set(allowed))
  if unknown:
    raise ValueError(f"{key}.{unknown[0]}={given[unknown[0]]!r} is not a key of a "
                     f"{evaluator_type} evaluator on {dataset!r}; allowed: {', '.join(allowed)}.")
  for split in splits:
    if not given.get(split):
      raise ValueError(f"{key}.{split} is missing; allowed: a split of {dataset!r} (slicing "
                       "works: 'train[:90%]').")
  return _section(Evaluator, given, key)


def parse(config: ml_collections.ConfigDict | Mapping[str, Any], *,
          require_data: bool = True) -> Run:
  """The run a config describes, every value checked; a bad one raises a ValueError naming it.

  `require_data=False` is for programs that read no data (clip_jax.plan needs the batch's
  shapes only): the data source may leave what it reads from unset (`data.files`, say).
  """
  values = _given(_plain(config))
  allowed = [field.name for field in dataclasses.fields(Run)]
  unknown = sorted(set(values) - set(allowed))
  if unknown:
    raise ValueError(f"{unknown[0]}={values[unknown[0]]!r} is not a setting; allowed: "
                     f"{', '.join(allowed)}.")
  _import_plugins(values.get("model") or {})  # their losses and towers, before either is read
  loss = _section(Loss, values.get("loss"), "loss")
  if loss.blockwise and not losses.of(loss.name).blockwise:
    raise ValueError(f"loss.blockwise=True with loss.name={loss.name!r}, which has no blockwise "
                     "form; allowed: False.")
  model = _architecture(values.get("model") or {}, loss.name)
  sections = {name: _section(cls, values.get(name), name) for name, cls in _SECTIONS.items()
              if name not in ("data", "loss")}
  evals = {name: _evaluator(name, evaluator_values)
           for name, evaluator_values in (values.get("evals") or {}).items()}
  top_level = {key: value for key, value in values.items()
               if key not in ("model", "evals", *_SECTIONS)}
  run = _section(Run, top_level, "config", model=model, loss=loss,
                 data=_data(values.get("data"), model.architecture, require_data), evals=evals,
                 **sections)
  _check_run(run)
  return run


def _tower_blocks(architecture: model_configs.CLIPConfig, tower: str) -> int:
  if tower == "text":
    return architecture.text.layers
  return towers.of(architecture.vision).blocks(architecture.vision)


def _check_run(run: Run) -> None:
  """Checks across sections, which no single section can make."""
  total_steps, optim = run.total_steps, run.optim
  if optim.warmup_steps >= total_steps:
    raise ValueError(f"optim.warmup_steps={optim.warmup_steps!r}; allowed: integers from 0 to "
                     f"total_steps - 1 = {total_steps - 1}.")
  if optim.end_learning_rate > optim.learning_rate:
    raise ValueError(f"optim.end_learning_rate={optim.end_learning_rate!r}; allowed: numbers "
                     f"from 0 to optim.learning_rate = {optim.learning_rate}.")
  if run.flip.unmasked_steps > total_steps:
    raise ValueError(f"flip.unmasked_steps={run.flip.unmasked_steps!r}; allowed: integers from 0 "
                     f"to total_steps={total_steps}.")
  architecture = run.model.architecture
  if run.flip.mask_ratio and towers.of(architecture.vision).patches is None:
    raise ValueError(f"flip.mask_ratio={run.flip.mask_ratio!r} with a "
                     f"{towers.describe(architecture.vision)} image tower, which has "
                     "no patches to drop; allowed: 0, or a ViT model.")
  _check_finetune(run.finetune, architecture)
  _check_distributed(run.distributed)
  mesh = run.mesh
  if mesh.data == -1 and mesh.fsdp == -1:
    raise ValueError("mesh.data=-1 and mesh.fsdp=-1; allowed: -1 for one axis at most.")
  for name, evaluator_settings in run.evals.items():
    if evaluator_settings.dataset == SYNTHETIC and run.data.name != SYNTHETIC:
      raise ValueError(f"evals.{name}.dataset='synthetic' evaluates with the synthetic data's "
                       f"world and words, but data.name={run.data.name!r}; allowed: a TFDS "
                       "dataset, or data.name='synthetic'.")


def _check_finetune(finetune: Finetune, architecture: model_configs.CLIPConfig) -> None:
  for tower in ("image", "text"):
    unlocked = getattr(finetune, f"{tower}_unlocked_blocks")
    if unlocked and not getattr(finetune, f"lock_{tower}"):
      raise ValueError(f"finetune.{tower}_unlocked_blocks={unlocked} without finetune.lock_"
                       f"{tower}=True; allowed: 0, or set lock_{tower}.")
    blocks = _tower_blocks(architecture, tower)
    if unlocked > blocks:
      raise ValueError(f"finetune.{tower}_unlocked_blocks={unlocked}; allowed: 0 to {blocks}, "
                       "the tower's blocks.")
    if unlocked and architecture.scan:
      raise ValueError(f"finetune.{tower}_unlocked_blocks={unlocked} with model.overrides.scan="
                       "True: scanned blocks share one stacked parameter; allowed: 0 (lock the "
                       "whole tower), or scan=False.")
  if finetune.checkpoint and architecture.scan:
    raise ValueError(f"finetune.checkpoint={finetune.checkpoint!r} with model.overrides.scan="
                     "True: converted checkpoints hold unrolled blocks; allowed: scan=False.")


_UNSET_DISTRIBUTED = Distributed()
EXPLICIT_DISTRIBUTED_KEYS = ("coordinator_address", "num_processes", "process_id")


def distributed_keys_set(distributed: Distributed) -> dict[str, Any]:
  """The keys besides `mode` that are set (not "", 0, -1 or ()), with their values."""
  return {field.name: getattr(distributed, field.name) for field in dataclasses.fields(Distributed)
          if field.name != "mode"
          and getattr(distributed, field.name) != getattr(_UNSET_DISTRIBUTED, field.name)}


def _check_distributed(distributed: Distributed) -> None:
  given = list(distributed_keys_set(distributed))
  if distributed.mode == "off" and given:
    raise ValueError(f"distributed.{given[0]}={getattr(distributed, given[0])!r} with "
                     f"distributed.mode='off'; allowed: {getattr(_UNSET_DISTRIBUTED, given[0])!r}, "
                     "or distributed.mode 'auto' or 'explicit'.")
  if distributed.mode == "explicit":
    for key in EXPLICIT_DISTRIBUTED_KEYS:
      if key not in given:
        raise ValueError(f"distributed.{key} is unset, and distributed.mode='explicit' needs it; "
                         f"allowed: {_field(Distributed, key).metadata['allowed']}.")
  if distributed.num_processes and distributed.process_id >= distributed.num_processes:
    raise ValueError(f"distributed.process_id={distributed.process_id!r}; allowed: integers from "
                     f"0 to num_processes - 1 = {distributed.num_processes - 1}.")


# ---------------------------------------------------------------------------------------------
# Back to a config: what a workdir's config.json holds.

def to_config(run: Run) -> ml_collections.ConfigDict:
  """A config that parses back to `run`, with the architecture written out in full (so that a
  workdir keeps its model even if the named model's table entry changes)."""
  values = {field.name: getattr(run, field.name) for field in dataclasses.fields(Run)}
  values["model"] = dict(name=run.model.name, plugins=run.model.plugins,
                         overrides=model_configs.config_to_dict(run.model.architecture))
  for name in _SECTIONS:
    values[name] = dataclasses.asdict(values[name])
  values["data"]["sources"] = {name: _source_values(part, run.data)
                               for name, part in run.data.sources.items()}
  values["evals"] = {name: _evaluator_values(evaluator_settings)
                     for name, evaluator_settings in run.evals.items()}
  return ml_collections.ConfigDict(values)


def _evaluator_values(evaluator_settings: Evaluator) -> dict[str, Any]:
  """The keys an evaluator of its type and dataset takes."""
  splits, optional = EVALUATOR_KEYS[evaluator_settings.type,
                                    evaluator_settings.dataset == SYNTHETIC]
  return {key: getattr(evaluator_settings, key)
          for key in (*EVALUATOR_COMMON_KEYS, *splits, *optional)}


def _source_values(part: Data, shared: Data) -> dict[str, Any]:
  """A mixture part's keys that differ from the shared data section's (and its name)."""
  values = {field.name: getattr(part, field.name) for field in dataclasses.fields(Data)
            if field.name not in ("sources", "synthetic")}
  return {key: value for key, value in values.items()
          if key == "name" or value != getattr(shared, key)}
