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

This module imports nothing of clip_jax but the model table and the registries, so every other
module may import it. Data sources, tokenizers and evaluator types register here from where they
are implemented; their built-in modules are imported by name where their names are read
(DATA_PLUGINS, EVALUATOR_PLUGINS).
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
from clip_jax import registry
from clip_jax.models import configs as model_configs
from clip_jax.models import towers


def is_count(value: Any) -> bool:
  """An int that is not a bool (a ConfigDict holds True where a count was meant, too)."""
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_text(value: Any) -> bool:
  return isinstance(value, str)


def one_of(*choices) -> tuple[Callable[[Any], bool], str]:
  return (lambda value: value in choices), ", ".join(repr(choice) for choice in choices)


COUNT = (lambda value: is_count(value) and value >= 0), "integers >= 0"
POSITIVE_COUNT = (lambda value: is_count(value) and value >= 1), "integers >= 1"
POSITIVE = (lambda value: is_number(value) and value > 0), "numbers > 0"
FRACTION = (lambda value: is_number(value) and 0 <= value < 1), "numbers in [0, 1)"
TEXT = is_text, "strings"
FLAG = (lambda value: isinstance(value, bool)), "True, False"
ANY = (lambda value: True), "anything"


def setting(default: Any, rule: tuple[Callable[[Any], bool], str] = ANY) -> Any:
  """A dataclass field with its default and the rule its values obey (checked by `parse`)."""
  is_valid, allowed = rule
  if isinstance(default, (tuple, dict)):
    return dataclasses.field(default_factory=lambda: default,
                             metadata=dict(is_valid=is_valid, allowed=allowed))
  return dataclasses.field(default=default, metadata=dict(is_valid=is_valid, allowed=allowed))


# ---------------------------------------------------------------------------------------------
# The sections.

def _registered(names: registry.Registry) -> tuple[Callable[[Any], bool], Callable[[], str]]:
  """The rule of a setting whose value is a name of `names`, listed when it is not."""
  return (lambda value: value in names), names.allowed


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
  name: str = setting("softmax", _registered(losses.KINDS))  # where each is defined
  blockwise: bool = setting(False, FLAG)
  tile_size: int = setting(1024, POSITIVE_COUNT)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Optim:
  """AdamW with linear warm-up and cosine decay (clip_jax/optim.py). The defaults are the paper's
  for ViT-B/32 (Radford et al. 2021, Table 20), with gradients clipped at norm 1."""
  learning_rate: float = setting(5e-4, POSITIVE)
  b1: float = setting(0.9, FRACTION)
  b2: float = setting(0.98, FRACTION)
  eps: float = setting(1e-6, POSITIVE)
  weight_decay: float = setting(0.2, ((lambda value: is_number(value) and value >= 0),
                                       "numbers >= 0"))
  warmup_steps: int = setting(2_000, COUNT)  # < total_steps, checked by `parse`.
  grad_clip_norm: float = setting(1.0, ((lambda value: is_number(value) and value >= 0),
                                         "0 (off) or a positive number"))
  end_learning_rate: float = setting(0.0, ((lambda value: is_number(value) and value >= 0),
                                            "numbers from 0 to optim.learning_rate"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Flip:
  """FLIP (clip_jax/flip.py, a ViT only): mask_ratio drops that fraction of each image's patches in
  training; the last unmasked_steps steps train on whole images again. 0.0 is plain CLIP."""
  mask_ratio: float = setting(0.0, ((lambda value: is_number(value) and 0 <= value < 1),
                                     "numbers from 0 (no masking) up to, not including, 1"))
  unmasked_steps: int = setting(0, COUNT)  # <= total_steps, checked by `parse`.


@dataclasses.dataclass(frozen=True, kw_only=True)
class Finetune:
  """Fine-tuning (clip_jax/finetune.py): start from a directory written by
  `python -m clip_jax.convert` ("" trains from scratch); LiT locks a tower but its last N blocks."""
  checkpoint: str = setting("", TEXT)
  lock_image: bool = setting(False, FLAG)
  image_unlocked_blocks: int = setting(0, COUNT)
  lock_text: bool = setting(False, FLAG)
  text_unlocked_blocks: int = setting(0, COUNT)
  # A checkpoint of another image size or text length: how its positions are interpolated ("":
  # its image tower family's own way; clip_jax/models/positions.py).
  position_interpolation: str = setting("", one_of("", *towers.POSITION_INTERPOLATIONS))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Mesh:
  """The ('data', 'fsdp') device mesh (clip_jax/sharding.py); one axis may be -1 for the rest.
  Parameters of at least min_shard_size elements are split over `fsdp`."""
  data: int = setting(-1, ((lambda value: is_count(value) and (value >= 1 or value == -1)),
                            "integers >= 1, or -1 for the remaining devices"))
  fsdp: int = setting(1, ((lambda value: is_count(value) and (value >= 1 or value == -1)),
                           "integers >= 1, or -1 for the remaining devices"))
  min_shard_size: int = setting(2**14, POSITIVE_COUNT)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Checkpoint:
  every_steps: int = setting(2_000, POSITIVE_COUNT)
  max_to_keep: int = setting(2, POSITIVE_COUNT)
  async_save: bool = setting(True, FLAG)


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
  mode: str = setting("off", one_of(*DISTRIBUTED_MODES))
  coordinator_address: str = setting("", (_is_address, "'host:port' of process 0"))
  num_processes: int = setting(0, (lambda value: is_count(value) and value >= 0,
                                    "integers >= 1"))
  process_id: int = setting(-1, (lambda value: is_count(value) and value >= -1,
                                  "integers from 0 to num_processes - 1"))
  local_device_ids: tuple[int, ...] = setting(
      (), (lambda value: isinstance(value, tuple) and all(
          is_count(device) and device >= 0 for device in value),
           "a tuple of this host's device ids, () for all"))


# ---------------------------------------------------------------------------------------------
# The data and the evaluators: kinds registered where they are implemented.

@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceKind:
  """A data source as the settings know it, registered where it is implemented
  (input_pipeline/sources/, or a plug-in's module)."""
  name: str  # data.name
  keys: type | None = None  # the record of its own section, data.<name>.*; None: it has none
  # Checks across its keys, (record, "data.<name>"): e.g. that the files it reads are named.
  check: Callable[[Any, str], None] = lambda keys, key: None
  # Its resumable record stream, (data, *, process_index, process_count) -> Stream
  # (input_pipeline/streams.py); None for a source that is not one (the synthetic world renders
  # in the graph, a mixture mixes streams), which a mixture therefore cannot mix.
  create_stream: Callable[..., Any] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenizerKind:
  """A tokenizer as the settings know it, registered where it is implemented
  (input_pipeline/tokenizers.py, or a plug-in's module)."""
  name: str  # data.tokenizer
  make: Callable[[Any], Any]  # (data settings) -> tokenizer, for data.context_length
  needs_model: bool = False  # whether it reads data.tokenizer_model


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluatorKind:
  """An evaluator type as the settings know it, registered where it is implemented
  (clip_jax/evaluation/evaluators.py, or a plug-in's module). On each kind of dataset it takes
  (splits it needs, other keys it takes) besides the common ones; None: it cannot run there."""
  name: str  # evals.<name>.type
  on_tfds: tuple[tuple[str, ...], tuple[str, ...]] | None
  on_synthetic: tuple[tuple[str, ...], tuple[str, ...]] | None
  # (name, settings, encode_image, encode_text, data, view) -> {metric: value}
  run: Callable[..., Mapping[str, float]]
  # (name, settings) -> None, raising ValueError: before a run, that what `dataset` names (not
  # synthetic) can be read. None: it is a TFDS dataset, checked as such.
  check: Callable[[str, Any], None] | None = None


SOURCES: registry.Registry[SourceKind] = registry.Registry("data source")
TOKENIZERS: registry.Registry[TokenizerKind] = registry.Registry("tokenizer")
EVALUATORS: registry.Registry[EvaluatorKind] = registry.Registry("evaluator type")

# The modules that register the built-in data sources, tokenizers and evaluators. They need
# TensorFlow, so this module imports them by name, like a plug-in named in model.plugins, only
# where their names are read: a program that reads no data (a plan, the doctor's training check)
# parses its config without them.
DATA_PLUGINS = ("input_pipeline",)
EVALUATOR_PLUGINS = ("clip_jax.evaluation.evaluators",)


SYNTHETIC = "synthetic"  # The built-in synthetic world: a data source and an evaluator dataset.
# Bounds on what a sample from a stranger may take (docs/data.md), for training's sources and the
# tools that read image collections: an image declaring more pixels (PIL's Image.MAX_IMAGE_PIXELS),
# a tar member or image file of more bytes (256 MiB holds an uncompressed image at that limit).
MAX_IMAGE_PIXELS = 89_478_485
MAX_MEMBER_BYTES = 256 << 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class Data:
  """The training data (input_pipeline/): a source, its own keys in its section (data.<name>.*,
  e.g. data.webdataset.files), then the keys all sources share: augmentation, tokenizer,
  shuffling. image_size and context_length follow the model unless set."""
  name: str = setting(SYNTHETIC, _registered(SOURCES))
  image_size: int = setting(None, POSITIVE_COUNT)
  context_length: int = setting(None, POSITIVE_COUNT)
  tokenizer: str = setting("clip_bpe", _registered(TOKENIZERS))
  # The tokenizer's model file: SentencePiece's .model (tokenizer=sentencepiece or siglip),
  # Gemma's tokenizer.json (gemma), each as published.
  tokenizer_model: str = setting("", TEXT)
  seed: int = setting(0, COUNT)
  # Random resized crop: the fraction of the image area kept; exact_resize=True: PIL's
  # antialiased bicubic (open_clip's pixels), about 2x slower.
  crop_scale: tuple[float, float] = setting((0.9, 1.0), (
      lambda value: isinstance(value, tuple) and len(value) == 2
      and all(is_number(item) for item in value) and 0 < value[0] <= value[1] <= 1,
      "(low, high) with 0 < low <= high <= 1"))
  exact_resize: bool = setting(False, FLAG)
  cycle_length: int = setting(8, POSITIVE_COUNT)  # Shards read at once by each process.
  # An image whose header declares more pixels (PIL's Image.MAX_IMAGE_PIXELS) is refused before
  # decoding, its sample skipped and counted (docs/data.md).
  max_image_pixels: int = setting(MAX_IMAGE_PIXELS, POSITIVE_COUNT)
  shuffle_window: int = setting(2_048, POSITIVE_COUNT)  # Records shuffled together.
  # The record of the source's section, data.<name>.* (None for a source without one, or when
  # parsed without reading data).
  source: Any = None
  # mixture: sources by name, each with its `name`, `weight`, its own section and the shared keys
  # that differ (made with `data_source(...)`). `weight` counts only in a mixture.
  weight: float = setting(1.0, POSITIVE)
  sources: Mapping[str, Data] = dataclasses.field(default_factory=dict)


def require(field: str, allowed: str) -> Callable[[Any, str], None]:
  """A SourceKind.check: the source reads from `field` of its section, which must be set."""
  def check(keys: Any, key: str) -> None:
    if not getattr(keys, field):
      raise ValueError(f"{key}.{field} is empty, and the {key.rsplit('.', 1)[-1]} source reads "
                       f"from it; allowed: {allowed}.")
  return check


@dataclasses.dataclass(frozen=True, kw_only=True)
class Evaluator:
  """One evaluator of `evals` (its type registered in clip_jax/evaluation/evaluators.py or by a
  plug-in). `dataset` is "synthetic" (new images of the built-in world: data.name must be
  synthetic) or a TFDS dataset; for type="benchmark", a suite of the benchmark (its data under
  data_dir). every_steps=0 runs it only at the end. classnames and templates: "" for the
  dataset's own, or a name of clip_jax.evaluation.prompts."""
  type: str = setting("zero_shot", _registered(EVALUATORS))
  dataset: str = setting(SYNTHETIC, ((lambda value: is_text(value) and value),
                                     f"{SYNTHETIC!r}, a TFDS dataset name or a benchmark suite"))
  every_steps: int = setting(0, ((lambda value: is_count(value) and value >= 0),
                                 "integers >= 0 (0: only at the end)"))
  batch_size: int = setting(256, POSITIVE_COUNT)  # Images or texts encoded at once.
  num_images: int = setting(1000, POSITIVE_COUNT)  # synthetic
  split: str = setting("", TEXT)  # zero_shot, retrieval
  train_split: str = setting("", TEXT)  # linear_probe
  validation_split: str = setting("", TEXT)
  test_split: str = setting("", TEXT)
  data_dir: str = setting("", TEXT)
  mock_examples: int = setting(0, COUNT)
  image_feature: str = setting("image", TEXT)
  label_feature: str = setting("label", TEXT)
  caption_feature: str = setting("captions/text", TEXT)
  classnames: str = setting("", TEXT)
  templates: str = setting("", TEXT)


EVALUATOR_COMMON_KEYS = ("type", "dataset", "every_steps", "batch_size")


def evaluator_keys(evaluator_settings: Evaluator | Mapping[str, Any],
                   key: str = "evals") -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(the splits it needs, the other keys it takes) for an evaluator's type and dataset."""
  get = (evaluator_settings.get if isinstance(evaluator_settings, Mapping) else
         lambda name, default: getattr(evaluator_settings, name))
  evaluator_type = get("type", _field(Evaluator, "type").default)
  dataset = get("dataset", SYNTHETIC)
  kind = EVALUATORS.get(evaluator_type, f"{key}.type")
  keys = kind.on_synthetic if dataset == SYNTHETIC else kind.on_tfds
  if keys is None:
    raise ValueError(f"{key}.dataset={dataset!r} with type={evaluator_type!r}; allowed: "
                     f"{'a TFDS image-label dataset' if kind.on_tfds else repr(SYNTHETIC)}.")
  return keys


NONFINITE_POLICIES = ("stop", "skip")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Run:
  """Everything a training run is. The defaults are the paper's ViT-B/32 run: 32 epochs of 400 M
  pairs (12.8 B samples) at a global batch of 32,768."""
  seed: int = setting(0, COUNT)
  total_steps: int = setting(390_625, POSITIVE_COUNT)
  global_batch_size: int = setting(32_768, POSITIVE_COUNT)
  # Each step's batch in that many micro-batches, with the same loss and update
  # (clip_jax.train_step): memory follows the micro-batch, at the cost of one more forward pass.
  accumulation_steps: int = setting(1, POSITIVE_COUNT)
  # > 0: the train state also keeps an exponential moving average of the parameters, updated
  # every step as ema = ema_decay * ema + (1 - ema_decay) * params; evaluations report both.
  ema_decay: float = setting(0.0, FRACTION)
  log_every_steps: int = setting(100, POSITIVE_COUNT)
  # "stop": a non-finite loss or gradient stops the run at its last good checkpoint; "skip": the
  # update is dropped and training goes on.
  nonfinite: str = setting("stop", one_of(*NONFINITE_POLICIES))
  # With nonfinite="skip": the run stops after this many skipped steps in a row (a run whose every
  # step is skipped is broken, not unlucky).
  max_consecutive_skips: int = setting(20, POSITIVE_COUNT)
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
    config[name] = (_data_config() if cls is Data else
                    _fields_config(cls, {}, unset_defaults=False))
  config.evals = ml_collections.ConfigDict()
  return config


def _data_config() -> ml_collections.ConfigDict:
  """The data section at its defaults: every shared key, and every registered source's section
  (none where the sources' modules do not import: see load_plugins)."""
  load_plugins(DATA_PLUGINS, optional=True)
  config = _fields_config(Data, {}, unset_defaults=False)
  del config["source"]
  for kind in SOURCES.entries():
    if kind.keys is not None:
      config[kind.name] = _fields_config(kind.keys, {}, unset_defaults=False)
  return config


def evaluator(**given) -> ml_collections.ConfigDict:
  """One entry of `config.evals`, with every evaluator key (those not given unset), so that each
  can be set from the command line: `config.evals.imagenet = settings.evaluator(...)`."""
  return _fields_config(Evaluator, given, unset_defaults=True)


def data_source(**given) -> ml_collections.ConfigDict:
  """One source of a mixture (`config.data.sources.<part>`): its `name`, `weight`, the keys of its
  own section and the shared data keys that differ, given flat
  (`data_source(name="webdataset", files="...", weight=0.3)`); every other key is there, unset."""
  load_plugins(DATA_PLUGINS)
  kind = SOURCES.get(given.get("name"), "name")
  own = {field.name for field in dataclasses.fields(kind.keys)} if kind.keys else set()
  for nested in ("source", "sources"):
    if nested in given:
      raise ValueError(f"{nested} is not a key of a mixture's source; allowed: the keys of a "
                       "stream source and the shared data keys.")
  config = _fields_config(Data, {key: value for key, value in given.items() if key not in own},
                          unset_defaults=True)
  del config["source"], config["sources"]
  if kind.keys is not None:
    config[kind.name] = _fields_config(
        kind.keys, {key: value for key, value in given.items() if key in own}, unset_defaults=True)
  return config


def data_settings(**given) -> Data:
  """Data settings from flat keys (a source's own beside the shared ones, as `data_source` takes
  them), checked as `parse` checks them: for code that reads data without a config (benchmarks,
  tools, tests). `sources`, a mixture's parts, are such records themselves."""
  sources = given.pop("sources", {})
  config = _plain(data_source(**{"name": SYNTHETIC, **given}))
  return _data_record(config, "data", True, sources=sources)


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


def load_plugins(modules: tuple[str, ...], *, optional: bool = False) -> None:
  """Imports the modules that register the built-in kinds (DATA_PLUGINS, EVALUATOR_PLUGINS).

  `optional`: where they do not import (no TensorFlow, as on an accelerator host that only
  benchmarks), go on without them: a config then has no source sections, and parses only for a
  program that reads no data (`parse(require_data=False)`), which is all such a host runs.
  """
  for module in modules:
    try:
      importlib.import_module(module)
    except ImportError:
      if not optional:
        raise


def _data(values: Mapping[str, Any] | None, architecture: model_configs.CLIPConfig,
          require_data: bool = True) -> Data:
  """The data section; image_size and context_length follow the model unless set. Without
  `require_data`, the source is not read: its name is taken as it is and its section ignored."""
  given = _given(values)
  model_sizes = dict(image_size=architecture.vision.image_size,
                     context_length=architecture.text.context_length)
  for key, expected in model_sizes.items():
    if given.get(key, expected) != expected:
      raise ValueError(f"data.{key}={given[key]} but the model takes {expected}; allowed: "
                       f"{expected} (or leave data.{key} unset to follow the model).")
  if require_data:
    load_plugins(DATA_PLUGINS)
  shared = {key: value for key, value in given.items()
            if key != "sources" and not isinstance(value, Mapping)}
  sources = {}
  for part_name, part in sorted((given.get("sources") or {}).items()):
    key = f"data.sources.{part_name}"
    part = _given(part)
    if "sources" in part:
      raise ValueError(f"{key}.sources is not a setting of a mixture's source; allowed: the keys "
                       "of a stream source.")
    merged = _data_record({**shared, **part, **model_sizes}, key, require_data)
    if require_data and SOURCES.get(merged.name, f"{key}.name").create_stream is None:
      streams = [kind.name for kind in SOURCES.entries() if kind.create_stream is not None]
      raise ValueError(f"{key}.name={merged.name!r}; allowed: {', '.join(streams)}.")
    sources[part_name] = merged
  data = _data_record({**given, **model_sizes}, "data", require_data, sources=sources)
  if (data.name == "mixture") != bool(sources):
    raise ValueError(f"data.name={data.name!r} with {len(sources)} data.sources; allowed: "
                     "data.name='mixture' with one or more data.sources, or another source "
                     "without them.")
  return data


def _data_record(given: Mapping[str, Any], key: str, require_data: bool, **resolved) -> Data:
  """A data section (or a mixture's part, under `key`) with its source's own section parsed."""
  sections = {name: value for name, value in given.items()
              if isinstance(value, Mapping) and name != "sources"}
  flat = {name: value for name, value in given.items() if name not in sections}
  shared = {field.name for field in dataclasses.fields(Data)} - {"source"}
  for name in sorted(set(flat) - shared):
    owners = [kind.name for kind in SOURCES.entries()
              if kind.keys and name in {field.name for field in dataclasses.fields(kind.keys)}]
    raise ValueError(f"{key}.{name}={flat[name]!r} is not a setting"
                     + (f" shared by the sources; allowed: {key}.{owners[0]}.{name}, in the "
                        f"section of the source that reads it." if owners else
                        f"; allowed: {', '.join(sorted(shared))}, and a source's own section."))
  if not require_data:  # Names unchecked: their registries may not be loaded.
    return _section(Data, flat, key, name=flat.get("name", SYNTHETIC), tokenizer=flat.get(
        "tokenizer", _field(Data, "tokenizer").default), **resolved)
  data = _section(Data, flat, key, **resolved)
  kind = SOURCES.get(data.name, f"{key}.name")
  for name, values in sections.items():
    # A config has every source's section at its defaults; another source's keys set are a
    # mistake (a key under the wrong source, or data.name forgotten).
    other = SOURCES.get(name, f"{key}.{name}") if name != data.name else None
    changed = sorted(
        field.name for field in dataclasses.fields(other.keys or type(None))
        if _given(values).get(field.name, _default(field)) != _default(field)) if other else []
    if changed:
      raise ValueError(f"{key}.{name}.{changed[0]} is set but {key}.name={data.name!r}; allowed: "
                       f"data.name={name!r}, or the keys of data.{data.name}'s own section.")
  source = None
  if kind.keys is not None:
    source = _section(kind.keys, sections.get(data.name), f"{key}.{data.name}")
    kind.check(source, f"{key}.{data.name}")
  tokenizer = TOKENIZERS.get(data.tokenizer, f"{key}.tokenizer")
  if tokenizer.needs_model and not data.tokenizer_model:
    raise ValueError(f"{key}.tokenizer_model='': {key}.tokenizer={data.tokenizer!r} needs the "
                     "path of its model file (SentencePiece's .model, Gemma's tokenizer.json).")
  return dataclasses.replace(data, source=source)


def _evaluator(name: str, values: Mapping[str, Any] | None) -> Evaluator:
  key = f"evals.{name}"
  if not isinstance(values, Mapping):
    raise ValueError(f"{key}={values!r}; allowed: a dict of evaluator settings.")
  given = _given(values)
  for common in ("type", "dataset"):
    if common in given:
      _check_value(f"{key}.{common}", _field(Evaluator, common), given[common])
  splits, optional = evaluator_keys(given, key)
  allowed = (*EVALUATOR_COMMON_KEYS, *splits, *optional)
  unknown = sorted(set(given) - set(allowed))
  if unknown:
    evaluator_type = given.get("type", _field(Evaluator, "type").default)
    raise ValueError(f"{key}.{unknown[0]}={given[unknown[0]]!r} is not a key of a "
                     f"{evaluator_type} evaluator on {given.get('dataset', SYNTHETIC)!r}; "
                     f"allowed: {', '.join(allowed)}.")
  for split in splits:
    if not given.get(split):
      raise ValueError(f"{key}.{split} is missing; allowed: a split of {given['dataset']!r} "
                       "(slicing works: 'train[:90%]').")
  return _section(Evaluator, given, key)


def parse(config: ml_collections.ConfigDict | Mapping[str, Any], *,
          require_data: bool = True) -> Run:
  """The run a config describes, every value checked; a bad one raises a ValueError naming it.

  `require_data=False` is for programs that read no data (clip_jax.plan needs the batch's
  shapes only): the data source may leave what it reads from unset (`data.webdataset.files`, say).
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
  if values.get("evals"):
    load_plugins(EVALUATOR_PLUGINS)
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


def distributed_settings(**given) -> Distributed:
  """Distributed settings from keys (a program's flags, e.g. clip_jax.evaluate's), checked as
  `parse` checks config.distributed: errors name `distributed.<key>`."""
  distributed = _section(Distributed, given, "distributed")
  _check_distributed(distributed)
  return distributed


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
  # Every source's section the run knows, as in default_config: a change of source shows as the
  # keys changed.
  values["data"] = {**_default_sections(run.model.plugins), **_data_values(run.data)}
  values["data"]["sources"] = {name: _source_values(part, run.data)
                               for name, part in run.data.sources.items()}
  values["evals"] = {name: _evaluator_values(evaluator_settings)
                     for name, evaluator_settings in run.evals.items()}
  return ml_collections.ConfigDict(values)


def upgraded(values: Mapping[str, Any]) -> dict[str, Any]:
  """A stored config (a workdir's config.json) in today's layout. Until 2026-12-07 a data
  source's keys sat at data.* (data.files); they are in its section now (data.webdataset.files):
  the named source's move there, the other sources' (stored at their defaults) are dropped, and
  the sections are written out as `to_config` writes them."""
  values = dict(values)
  if isinstance(values.get("data"), Mapping):
    model = values.get("model") if isinstance(values.get("model"), Mapping) else {}
    values["data"] = _upgraded_data(values["data"], tuple(model.get("plugins") or ()),
                                    every_section=True)
  return values


def _upgraded_data(data: Mapping[str, Any], plugins: tuple[str, ...],
                   every_section: bool = False) -> dict[str, Any]:
  shared = {field.name for field in dataclasses.fields(Data)}
  flat = {key: value for key, value in data.items()
          if key not in shared and not isinstance(value, Mapping)}
  upgraded_data = {key: value for key, value in data.items() if key not in flat}
  if flat:
    load_plugins(DATA_PLUGINS)
    name = upgraded_data.get("name", SYNTHETIC)
    sections = _default_sections(plugins)
    for section_name, defaults in sections.items() if every_section else []:
      upgraded_data[section_name] = {**defaults, **(upgraded_data.get(section_name) or {})}
    if name in sections:  # ("" stood for the source's own default, which its section now holds.)
      moved = {key: value for key, value in flat.items() if key in sections[name] and value != ""}
      upgraded_data[name] = {**sections[name], **(upgraded_data.get(name) or {}), **moved}
  if isinstance(upgraded_data.get("sources"), Mapping):
    upgraded_data["sources"] = {part_name: _upgraded_data(part, plugins)
                                for part_name, part in upgraded_data["sources"].items()}
  return upgraded_data


def _evaluator_values(evaluator_settings: Evaluator) -> dict[str, Any]:
  """The keys an evaluator of its type and dataset takes."""
  splits, optional = evaluator_keys(evaluator_settings)
  return {key: getattr(evaluator_settings, key)
          for key in (*EVALUATOR_COMMON_KEYS, *splits, *optional)}


def _default_sections(plugins: tuple[str, ...]) -> dict[str, dict[str, Any]]:
  """The sections at their defaults of the built-in sources and those of `plugins` (a run's
  model.plugins), by source name: what any process reading the config knows, not a plug-in that
  other code of this process registered."""
  modules = (*DATA_PLUGINS, *plugins)
  return {kind.name: dataclasses.asdict(kind.keys()) for kind in SOURCES.entries()
          if kind.keys is not None and any(
              kind.keys.__module__ == module or kind.keys.__module__.startswith(module + ".")
              for module in modules)}


def _data_values(data: Data) -> dict[str, Any]:
  """A data section as a config has it: the shared keys, and the source's under its name."""
  values = {field.name: getattr(data, field.name) for field in dataclasses.fields(Data)
            if field.name not in ("source", "sources")}
  if data.source is not None:
    values[data.name] = dataclasses.asdict(data.source)
  return values


def _source_values(part: Data, shared: Data) -> dict[str, Any]:
  """A mixture part's section, and its shared keys that differ from the data section's."""
  values = _data_values(part)
  return {key: value for key, value in values.items()
          if key in ("name", part.name) or value != getattr(shared, key)}
