"""The evaluators of a training run: `config.evals` maps names to evaluators (big_vision's way),
each run every `every_steps` steps (0: never before the end) and at the last step, its metrics
named "<name>/<metric>":

  config.evals.imagenet = settings.evaluator(type="zero_shot", dataset="imagenet2012",
                                             split="validation", every_steps=5_000)
  config.evals.coco = settings.evaluator(type="retrieval", dataset="coco_captions", split="test")
  config.evals.cifar10_probe = settings.evaluator(
      type="linear_probe", dataset="cifar10", train_split="train[:45000]",
      validation_split="train[45000:]", test_split="test")

`dataset` is a TFDS dataset, or "synthetic" (new images of the built-in shapes, with the training
data's world and words). The "benchmark" type runs a suite of the scaling papers' benchmark
(`benchmark_tasks`: `dataset` names the suite, `data_dir` where its data is), logging each task's
main metric and their average:

  config.evals.quick = settings.evaluator(type="benchmark", dataset="quick",
                                          data_dir="gs://bucket/evalsets", every_steps=10_000)

The keys and their defaults are in `clip_jax.settings` (`Evaluator`); each type registers below
which of them it takes (`settings.EVALUATORS`), and a plug-in may register its own. `batch_size`
is how many images or texts are encoded at once, sharded over every device.

Zero-shot class names and templates (`classnames`, `templates`): by default the dataset's curated
ones if `prompts.DATASET_PROMPTS` has them, else its TFDS label names with the 80 ImageNet
templates; either can be set to a name of `prompts.CLASSNAME_SETS` / `prompts.TEMPLATE_SETS`.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import tensorflow_datasets as tfds

from clip_jax import encoding
from clip_jax import settings
from clip_jax.evaluation import benchmark
from clip_jax.evaluation import benchmark_tasks
from clip_jax.evaluation import linear_probe
from clip_jax.evaluation import prompts
from clip_jax.evaluation import retrieval
from clip_jax.evaluation import synthetic_tasks
from clip_jax.evaluation import zero_shot
from clip_jax import image_preparation
from input_pipeline import eval_data
from input_pipeline import tokenizers

Evaluators = Mapping[str, settings.Evaluator]
Encoder = encoding.Encoder


def check_data(evals: Evaluators) -> None:
  """Before a run: the prompts named exist and every TFDS evaluator's data can be read
  (`settings.parse` has checked the keys), so that a run does not fail at its first evaluation."""
  for name, evaluator in evals.items():
    for choice, allowed in (("classnames", prompts.CLASSNAME_SETS),
                            ("templates", prompts.TEMPLATE_SETS)):
      if getattr(evaluator, choice) and getattr(evaluator, choice) not in allowed:
        raise ValueError(f"evals.{name}.{choice}={getattr(evaluator, choice)!r}; allowed: "
                         f"{', '.join(allowed)}, or '' for the dataset's default.")
    if evaluator.dataset != settings.SYNTHETIC:
      check = settings.EVALUATORS.get(evaluator.type, f"evals.{name}.type").check
      (check or _check_tfds)(name, evaluator)


def _check_tfds(name: str, evaluator: settings.Evaluator) -> None:
  """The dataset exists, has the splits and features named, and zero-shot class names fit it."""
  key, dataset = f"evals.{name}", evaluator.dataset
  try:
    builder = eval_data.tfds_builder(dataset, **_tfds_options(evaluator))
  except tfds.core.DatasetNotFoundError:
    raise ValueError(f"{key}.dataset={dataset!r} is neither a TFDS dataset nor one in data_dir "
                     f"{evaluator.data_dir!r}; allowed: {settings.SYNTHETIC!r} or a TFDS "
                     "dataset name.") from None
  split_keys, keys = settings.evaluator_keys(evaluator, key)
  for split_key in () if evaluator.mock_examples else split_keys:  # mock data has no splits
    split = getattr(evaluator, split_key)
    try:
      builder.info.splits[split]
    except (KeyError, ValueError) as error:
      splits = ", ".join(builder.info.splits) or "none: the data is not prepared"
      raise ValueError(f"{key}.{split_key}={split!r} of {dataset!r} (data_dir "
                       f"{builder.data_dir!r}): {error}; allowed: {splits}.") from None
  features = builder.info.features
  for feature_key in ("image_feature", "label_feature"):
    feature = getattr(evaluator, feature_key)
    if feature_key in keys and feature not in features:
      raise ValueError(f"{key}.{feature_key}={feature!r} is not a feature of "
                       f"{dataset!r}; allowed: {', '.join(features)}.")
  if evaluator.type == "zero_shot":
    num_classes = features[evaluator.label_feature].num_classes
    if len(_classnames(evaluator)) != num_classes:
      raise ValueError(f"{key}.classnames={evaluator.classnames!r} gives "
                       f"{len(_classnames(evaluator))} class names, but {dataset!r} has "
                       f"{num_classes} classes; allowed: {', '.join(prompts.CLASSNAME_SETS)}.")


def due(evals: Evaluators, step: int, total_steps: int | None = None) -> list[str]:
  """The names of the evaluators to run at `step`: every `every_steps` steps, and at the end."""
  return [name for name, evaluator in evals.items()
          if step == total_steps or (evaluator.every_steps and step % evaluator.every_steps == 0)]


def run_evaluators(evals: Evaluators, encode_image: Encoder, encode_text: Encoder, step: int, *,
                   data: settings.Data, view: image_preparation.Preprocessing,
                   total_steps: int | None = None) -> dict[str, float]:
  """Runs the evaluators due at `step`; returns their metrics, named "<name>/<metric>".

  The encoders map numpy inputs [b, ...] to features [b, E] (`encoding.make_encoders`); `data` is
  the training data's settings: its tokenizer, image size and, for synthetic evaluators, its world;
  `view` is the model's preprocessing (`CLIPConfig.preprocessing`): how images are resized.
  """
  results = {}
  for name in due(evals, step, total_steps):
    evaluator = evals[name]
    run = settings.EVALUATORS.get(evaluator.type, f"evals.{name}.type").run
    results.update(run(name, evaluator, encode_image, encode_text, data, view))
  return results


def summary_lines(evals: Evaluators, results: dict[str, float]) -> list[str]:
  """One line per evaluator with results: "imagenet: top1 0.312, top5 0.581, ...".

  The synthetic zero-shot evaluation keeps its own line (`zero_shot.summary`).
  """
  lines = []
  for name, evaluator in evals.items():
    metrics = {key.removeprefix(f"{name}/"): value for key, value in results.items()
               if key.startswith(f"{name}/")}
    if not metrics:
      continue
    if (evaluator.type, evaluator.dataset) == ("zero_shot", settings.SYNTHETIC):
      lines.append(zero_shot.summary(results, prefix=name))
    else:
      lines.append(f"{name}: " + ", ".join(f"{metric} {value:.4g}"
                                           for metric, value in metrics.items()))
  return lines


def _tfds_options(evaluator: settings.Evaluator) -> dict[str, Any]:
  return dict(data_dir=evaluator.data_dir, mock_examples=evaluator.mock_examples)


def _reader_options(evaluator: settings.Evaluator, data: settings.Data,
                    view: image_preparation.Preprocessing) -> dict[str, Any]:
  return dict(**_tfds_options(evaluator), image_feature=evaluator.image_feature,
              image_size=data.image_size, view=view, batch_size=evaluator.batch_size)


def _classnames(evaluator: settings.Evaluator) -> list[str]:
  name = evaluator.classnames or prompts.dataset_prompts(evaluator.dataset)[0]
  if name == prompts.TFDS_CLASSNAMES:
    return eval_data.label_names(evaluator.dataset, **_tfds_options(evaluator),
                                 label_feature=evaluator.label_feature)
  return list(prompts.classnames(name))


def _prefixed(name: str, metrics: dict[str, float]) -> dict[str, float]:
  return {f"{name}/{metric}": value for metric, value in metrics.items()}


def _run_zero_shot(name, evaluator, encode_image, encode_text, data, view):
  if evaluator.dataset == settings.SYNTHETIC:
    return zero_shot.evaluate_synthetic(encode_image, encode_text, data,
                                        num_images=evaluator.num_images,
                                        batch_size=evaluator.batch_size, prefix=name)
  batches = eval_data.image_label_batches(
      evaluator.dataset, evaluator.split, label_feature=evaluator.label_feature,
      **_reader_options(evaluator, data, view))
  templates = evaluator.templates or prompts.dataset_prompts(evaluator.dataset)[1]
  return _prefixed(name, zero_shot.evaluate_classification(
      encode_image, encode_text, tokenizers.create_tokenizer(data).tokenize, batches,
      _classnames(evaluator), prompts.templates(templates), batch_size=evaluator.batch_size))


def _run_retrieval(name, evaluator, encode_image, encode_text, data, view):
  if evaluator.dataset == settings.SYNTHETIC:
    batches = eval_data.synthetic_caption_batches(data, num_images=evaluator.num_images,
                                                  batch_size=evaluator.batch_size)
  else:
    batches = eval_data.caption_batches(
        evaluator.dataset, evaluator.split, caption_feature=evaluator.caption_feature,
        **_reader_options(evaluator, data, view))
  return _prefixed(name, retrieval.evaluate(
      encode_image, encode_text, tokenizers.create_tokenizer(data).tokenize, batches,
      batch_size=evaluator.batch_size))


def _run_linear_probe(name, evaluator, encode_image, encode_text, data, view):
  del encode_text

  def features_and_labels(split):  # [N, E], [N]
    return linear_probe.encode_split(encode_image, eval_data.image_label_batches(
        evaluator.dataset, split, label_feature=evaluator.label_feature,
        **_reader_options(evaluator, data, view)), evaluator.batch_size)

  num_classes = len(eval_data.label_names(evaluator.dataset, **_tfds_options(evaluator),
                                          label_feature=evaluator.label_feature))
  return _prefixed(name, linear_probe.evaluate(
      features_and_labels(evaluator.train_split), features_and_labels(evaluator.validation_split),
      features_and_labels(evaluator.test_split), num_classes))


def _run_benchmark(name, evaluator, encode_image, encode_text, data, view):
  """The suite `dataset` (`benchmark`): each task's main metric ("<name>/<task key>"), their
  average over the tasks found, their number and the seconds the evaluation took."""
  start = time.monotonic()
  tasks = benchmark_tasks.suite_tasks(evaluator.dataset)
  data_dir = evaluator.data_dir
  if evaluator.dataset == settings.SYNTHETIC:
    data_dir = synthetic_tasks.written(data, num_images=evaluator.num_images, data_dir=data_dir)
  model = benchmark.Model(encode_image, encode_text, tokenizers.create_tokenizer(data).tokenize,
                          data.image_size, view)
  results = benchmark.evaluate_suite(tasks, model, data_dir=data_dir,
                                     batch_size=evaluator.batch_size,
                                     mock_examples=evaluator.mock_examples)
  metrics = {key: entry["metrics"]["main_metric"] for key, entry in results["tasks"].items()}
  mean, covered = benchmark.average(tasks, results)
  if mean is not None:
    metrics["average"] = mean
  metrics.update(tasks_covered=covered, seconds=time.monotonic() - start)
  return _prefixed(name, metrics)


def _check_benchmark(name, evaluator):
  try:
    benchmark_tasks.suite_tasks(evaluator.dataset)
  except ValueError as error:
    raise ValueError(f"evals.{name}.dataset: {error}") from None


_TFDS_KEYS = ("data_dir", "mock_examples", "image_feature")
settings.EVALUATORS.register(settings.EvaluatorKind(
    name="zero_shot", run=_run_zero_shot, on_synthetic=((), ("num_images",)),
    on_tfds=(("split",), (*_TFDS_KEYS, "label_feature", "classnames", "templates"))))
settings.EVALUATORS.register(settings.EvaluatorKind(
    name="retrieval", run=_run_retrieval, on_synthetic=((), ("num_images",)),
    on_tfds=(("split",), (*_TFDS_KEYS, "caption_feature"))))
settings.EVALUATORS.register(settings.EvaluatorKind(
    name="linear_probe", run=_run_linear_probe, on_synthetic=None,
    on_tfds=(("train_split", "validation_split", "test_split"), (*_TFDS_KEYS, "label_feature"))))
# `dataset`: a suite of clip_jax.evaluation.benchmark_tasks, or task keys; "synthetic": the
# synthetic world's tasks, written from the training data's settings.
settings.EVALUATORS.register(settings.EvaluatorKind(
    name="benchmark", run=_run_benchmark, check=_check_benchmark,
    on_synthetic=((), ("num_images", "data_dir")), on_tfds=((), ("data_dir", "mock_examples"))))
