"""The evaluators of a training run: `config.evals` maps names to evaluator configs (big_vision's
way), each run every `every_steps` steps and at the last step, its metrics named "<name>/<metric>":

  config.evals.imagenet = dict(type="zero_shot", dataset="imagenet2012", split="validation",
                               every_steps=5_000)
  config.evals.coco = dict(type="retrieval", dataset="coco_captions", split="val",
                           every_steps=5_000)
  config.evals.cifar10_probe = dict(type="linear_probe", dataset="cifar10",
                                    train_split="train[:45000]", validation_split="train[45000:]",
                                    test_split="test", every_steps=20_000)

Every evaluator needs `type` (TYPES), `every_steps` and `dataset`: a TFDS dataset, or "synthetic"
(new images of the built-in shapes, with the training data's world and words: data.name must be
"synthetic"). The other keys and their defaults are in KEYS; `batch_size` (default 256) is how
many images or texts are encoded at once, sharded over every device. An evaluator named
"zero_shot" without a type and dataset is the synthetic zero-shot evaluation of the quickstart:
`evals.zero_shot = dict(every_steps=250, num_images=1000)`.

Zero-shot class names and templates (`classnames`, `templates`): by default the dataset's curated
ones if `prompts.DATASET_PROMPTS` has them, else its TFDS label names with the 80 ImageNet
templates; either can be set to a name of `prompts.CLASSNAME_SETS` / `prompts.TEMPLATE_SETS`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from clip_jax import sharding
from clip_jax.evaluation import linear_probe
from clip_jax.evaluation import prompts
from clip_jax.evaluation import retrieval
from clip_jax.evaluation import zero_shot
from input_pipeline import eval_data
from input_pipeline import tokenizers

TYPES = ("zero_shot", "retrieval", "linear_probe")
SYNTHETIC = "synthetic"
REQUIRED = ("type", "every_steps", "dataset")
# The synthetic zero-shot evaluation, as configs/synthetic_demo.py (and older configs) list it.
DEFAULTS_BY_NAME = {"zero_shot": dict(type="zero_shot", dataset=SYNTHETIC)}

_TFDS_KEYS = dict(data_dir="", mock_examples=0, image_feature="image")
# (type, on synthetic data) -> (keys it needs besides REQUIRED, optional keys with defaults).
KEYS = {
    ("zero_shot", False): (("split",), dict(**_TFDS_KEYS, label_feature="label", classnames="",
                                            templates="")),
    ("retrieval", False): (("split",), dict(**_TFDS_KEYS, caption_feature="captions/text")),
    ("linear_probe", False): (("train_split", "validation_split", "test_split"),
                              dict(**_TFDS_KEYS, label_feature="label")),
    ("zero_shot", True): ((), dict(num_images=1000)),
    ("retrieval", True): ((), dict(num_images=1000)),
}
COMMON_KEYS = dict(batch_size=256)

Settings = dict[str, Any]
Encoder = zero_shot.Encoder


def settings(name: str, evaluator_config) -> Settings:
  """The evaluator's keys with defaults filled in; a bad one raises a ValueError naming it."""
  key = f"evals.{name}"
  if not hasattr(evaluator_config, "items"):
    raise ValueError(f"{key}={evaluator_config!r}; allowed: a dict of evaluator settings.")
  given = {**DEFAULTS_BY_NAME.get(name, {}), **dict(evaluator_config.items())}
  allowed_values = {"type": ", ".join(TYPES), "every_steps": "a positive number of steps",
                    "dataset": f"{SYNTHETIC!r} or a TFDS dataset name"}
  for required in REQUIRED:
    if required not in given:
      raise ValueError(f"{key}.{required} is missing; allowed: {allowed_values[required]}.")
  if given["type"] not in TYPES:
    raise ValueError(f"{key}.type={given['type']!r}; allowed: {allowed_values['type']}.")
  synthetic = given["dataset"] == SYNTHETIC
  if (given["type"], synthetic) not in KEYS:
    raise ValueError(f"{key}.dataset={given['dataset']!r} with type={given['type']!r}; allowed: "
                     "a TFDS image-label dataset.")
  needed, optional = KEYS[given["type"], synthetic]
  for required in needed:
    if required not in given:
      raise ValueError(f"{key}.{required} is missing; allowed: a split of {given['dataset']!r} "
                       "(slicing works: 'train[:90%]').")
  allowed_keys = (*REQUIRED, *needed, *optional, *COMMON_KEYS)
  unknown = sorted(set(given) - set(allowed_keys))
  if unknown:
    raise ValueError(f"{key}.{unknown[0]}={given[unknown[0]]!r} is not a key of a "
                     f"{given['type']} evaluator on {given['dataset']!r}; allowed: "
                     f"{', '.join(allowed_keys)}.")
  for positive in ("every_steps", "batch_size", "num_images"):
    value = given.get(positive, 1)
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"{key}.{positive}={value!r}; allowed: positive integers.")
  for choice, allowed in (("classnames", prompts.CLASSNAME_SETS),
                          ("templates", prompts.TEMPLATE_SETS)):
    if given.get(choice) and given[choice] not in allowed:
      raise ValueError(f"{key}.{choice}={given[choice]!r}; allowed: {', '.join(allowed)}, or ''"
                       " for the dataset's default.")
  return {**COMMON_KEYS, **optional, **given}


def check(evals_config, data_config: ml_collections.ConfigDict) -> None:
  """Checks every evaluator before training: its keys, and that its data can be read."""
  for name, evaluator_config in evals_config.items():
    evaluator = settings(name, evaluator_config)
    if evaluator["dataset"] == SYNTHETIC:
      if data_config.name != SYNTHETIC:
        raise ValueError(f"evals.{name}.dataset='synthetic' evaluates with the synthetic data's "
                         f"world and words, but data.name={data_config.name!r}; allowed: a TFDS "
                         "dataset, or data.name='synthetic'.")
    else:
      _check_tfds(name, evaluator)


def _check_tfds(name: str, evaluator: Settings) -> None:
  """The dataset exists, has the splits and features named, and zero-shot class names fit it."""
  key, dataset = f"evals.{name}", evaluator["dataset"]
  try:
    builder = eval_data.tfds_builder(dataset, **_tfds_options(evaluator))
  except tfds.core.DatasetNotFoundError:
    raise ValueError(f"{key}.dataset={dataset!r} is neither a TFDS dataset nor one in data_dir "
                     f"{evaluator['data_dir']!r}; allowed: {SYNTHETIC!r} or a TFDS dataset "
                     "name.") from None
  split_keys = KEYS[evaluator["type"], False][0]
  for split_key in () if evaluator["mock_examples"] else split_keys:  # mock data has no splits
    try:
      builder.info.splits[evaluator[split_key]]
    except (KeyError, ValueError) as error:
      splits = ", ".join(builder.info.splits) or "none: the data is not prepared"
      raise ValueError(f"{key}.{split_key}={evaluator[split_key]!r} of {dataset!r} (data_dir "
                       f"{builder.data_dir!r}): {error}; allowed: {splits}.") from None
  features = builder.info.features
  for feature_key in ("image_feature", "label_feature"):
    if feature_key in evaluator and evaluator[feature_key] not in features:
      raise ValueError(f"{key}.{feature_key}={evaluator[feature_key]!r} is not a feature of "
                       f"{dataset!r}; allowed: {', '.join(features)}.")
  if evaluator["type"] == "zero_shot":
    num_classes = features[evaluator["label_feature"]].num_classes
    if len(_classnames(evaluator)) != num_classes:
      raise ValueError(f"{key}.classnames={evaluator['classnames']!r} gives "
                       f"{len(_classnames(evaluator))} class names, but {dataset!r} has "
                       f"{num_classes} classes; allowed: {', '.join(prompts.CLASSNAME_SETS)}.")


def due(evals_config, step: int, total_steps: int | None = None) -> list[str]:
  """The names of the evaluators to run at `step`: every `every_steps` steps, and at the end."""
  return [name for name, evaluator_config in evals_config.items()
          if step % settings(name, evaluator_config)["every_steps"] == 0 or step == total_steps]


def run_evaluators(evals_config, encode_image: Encoder, encode_text: Encoder, step: int, *,
                   data_config: ml_collections.ConfigDict,
                   total_steps: int | None = None) -> dict[str, float]:
  """Runs the evaluators due at `step`; returns their metrics, named "<name>/<metric>".

  The encoders map numpy inputs [b, ...] to features [b, E] (`make_encoders`); `data_config` is
  the training data's: its tokenizer, image size and, for synthetic evaluators, its world.
  """
  results = {}
  for name in due(evals_config, step, total_steps):
    evaluator = settings(name, evals_config[name])
    results.update(_RUNNERS[evaluator["type"]](name, evaluator, encode_image, encode_text,
                                               data_config))
  return results


def summary_lines(evals_config, results: dict[str, float]) -> list[str]:
  """One line per evaluator with results: "imagenet: top1 0.312, top5 0.581, ...".

  The synthetic zero-shot evaluation keeps its own line (`zero_shot.summary`).
  """
  lines = []
  for name, evaluator_config in evals_config.items():
    metrics = {key.removeprefix(f"{name}/"): value for key, value in results.items()
               if key.startswith(f"{name}/")}
    if not metrics:
      continue
    evaluator = settings(name, evaluator_config)
    if (evaluator["type"], evaluator["dataset"]) == ("zero_shot", SYNTHETIC):
      lines.append(zero_shot.summary(results, prefix=name))
    else:
      lines.append(f"{name}: " + ", ".join(f"{metric} {value:.4g}"
                                           for metric, value in metrics.items()))
  return lines


def make_encoders(model, variables, mesh: jax.sharding.Mesh) -> tuple[Encoder, Encoder]:
  """Image and text encoders for the evaluators: numpy [b, ...] in, numpy features [b, E] out.

  As in training, the batch is split over every device of the mesh (rows padded to a multiple of
  the device count), and the parameters stay where they are. The features are replicated, so
  every process gets all of them (each process reads the whole evaluation set, see
  `input_pipeline.eval_data`). A batch size compiles once per run, not once per evaluation.
  """
  batch_sharding = sharding.batch_sharding(mesh)

  def encoder(method: str) -> Encoder:
    def encode(inputs: np.ndarray) -> np.ndarray:
      padding = [(0, -len(inputs) % mesh.devices.size)] + [(0, 0)] * (inputs.ndim - 1)
      padded = np.pad(inputs, padding)
      global_inputs = jax.make_array_from_callback(padded.shape, batch_sharding,
                                                   lambda index: padded[index])
      features = _encode(variables, global_inputs, model=model, method=method, mesh=mesh)
      return np.asarray(features)[:len(inputs)]

    return encode

  return encoder("encode_image"), encoder("encode_text")


@functools.partial(jax.jit, static_argnames=("model", "method", "mesh"))
def _encode(variables, inputs: jax.Array, *, model, method: str,
            mesh: jax.sharding.Mesh) -> jax.Array:
  features = model.apply(variables, inputs, method=method)  # [b, E]
  return jax.lax.with_sharding_constraint(features, sharding.replicated(mesh))


def _tfds_options(evaluator: Settings) -> dict[str, Any]:
  return {key: evaluator[key] for key in ("data_dir", "mock_examples")}


def _reader_options(evaluator: Settings, data_config: ml_collections.ConfigDict) -> dict[str, Any]:
  return dict(**_tfds_options(evaluator), image_feature=evaluator["image_feature"],
              image_size=data_config.image_size, batch_size=evaluator["batch_size"])


def _classnames(evaluator: Settings) -> list[str]:
  name = evaluator["classnames"] or prompts.dataset_prompts(evaluator["dataset"])[0]
  if name == prompts.TFDS_CLASSNAMES:
    return eval_data.label_names(evaluator["dataset"], **_tfds_options(evaluator),
                                 label_feature=evaluator["label_feature"])
  return list(prompts.classnames(name))


def _prefixed(name: str, metrics: dict[str, float]) -> dict[str, float]:
  return {f"{name}/{metric}": value for metric, value in metrics.items()}


def _run_zero_shot(name, evaluator, encode_image, encode_text, data_config):
  if evaluator["dataset"] == SYNTHETIC:
    return zero_shot.evaluate_synthetic(encode_image, encode_text, data_config,
                                        num_images=evaluator["num_images"],
                                        batch_size=evaluator["batch_size"], prefix=name)
  batches = eval_data.image_label_batches(
      evaluator["dataset"], evaluator["split"], label_feature=evaluator["label_feature"],
      **_reader_options(evaluator, data_config))
  templates = evaluator["templates"] or prompts.dataset_prompts(evaluator["dataset"])[1]
  return _prefixed(name, zero_shot.evaluate_classification(
      encode_image, encode_text, tokenizers.create_tokenizer(data_config).tokenize, batches,
      _classnames(evaluator), prompts.templates(templates), batch_size=evaluator["batch_size"]))


def _run_retrieval(name, evaluator, encode_image, encode_text, data_config):
  if evaluator["dataset"] == SYNTHETIC:
    batches = eval_data.synthetic_caption_batches(data_config, num_images=evaluator["num_images"],
                                                  batch_size=evaluator["batch_size"])
  else:
    batches = eval_data.caption_batches(
        evaluator["dataset"], evaluator["split"], caption_feature=evaluator["caption_feature"],
        **_reader_options(evaluator, data_config))
  return _prefixed(name, retrieval.evaluate(
      encode_image, encode_text, tokenizers.create_tokenizer(data_config).tokenize, batches,
      batch_size=evaluator["batch_size"]))


def _run_linear_probe(name, evaluator, encode_image, encode_text, data_config):
  del encode_text

  def features_and_labels(split_key):  # [N, E], [N]
    batches = eval_data.image_label_batches(
        evaluator["dataset"], evaluator[split_key], label_feature=evaluator["label_feature"],
        **_reader_options(evaluator, data_config))
    encoded = [(zero_shot.encode_in_batches(encode_image, batch["image"], evaluator["batch_size"]),
                batch["label"]) for batch in batches]
    return tuple(np.concatenate(arrays) for arrays in zip(*encoded))

  num_classes = len(eval_data.label_names(evaluator["dataset"], **_tfds_options(evaluator),
                                          label_feature=evaluator["label_feature"]))
  return _prefixed(name, linear_probe.evaluate(
      features_and_labels("train_split"), features_and_labels("validation_split"),
      features_and_labels("test_split"), num_classes))


_RUNNERS: dict[str, Callable[..., dict[str, float]]] = {
    "zero_shot": _run_zero_shot, "retrieval": _run_retrieval, "linear_probe": _run_linear_probe}
