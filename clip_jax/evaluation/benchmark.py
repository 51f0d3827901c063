"""The benchmark suite (`benchmark_tasks`): every task whose data is found, scored as DataComp and
CLIP_benchmark score it, and a row in open_clip's results layout.

Metric names are DataComp's (`eval_results.jsonl`): classification gives acc1, acc5 (5 or more
classes) and mean_per_class_recall; retrieval image_retrieval_recall@K (a caption finds its
image), text_retrieval_recall@K (an image finds one of its captions) and mean_recall@1, their mean
at 1; the WILDS and fairness sets add their worst-group accuracies and iWildCam its macro F1;
WinoGAViL gives Jaccard indices (`association_metrics`); linear probes top1 (`linear_probe`). Each
task's `main_metric` enters the average, over the tasks found: a task whose data is absent is
reported as absent, never as zero. Ranks break ties against the right answer (`ranking`).

A suite is resumable per task: after each task the results file is rewritten, and a run given the
same file skips the tasks it holds.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Callable, Sequence

from absl import logging
import numpy as np

from clip_jax import encoding
from clip_jax import files
from clip_jax import image_preparation
from clip_jax.evaluation import benchmark_data
from clip_jax.evaluation import benchmark_tasks
from clip_jax.evaluation import linear_probe
from clip_jax.evaluation import retrieval
from clip_jax.evaluation import zero_shot
from input_pipeline import eval_data

Task = benchmark_tasks.Task
_RETRIEVAL_NAMES = {"text_to_image": "image_retrieval_recall",
                    "image_to_text": "text_retrieval_recall"}


@dataclasses.dataclass(frozen=True)
class Model:
  """What the benchmark needs of a model: its encoders, tokenizer and image view."""
  encode_image: encoding.Encoder
  encode_text: encoding.Encoder
  tokenize: encoding.Tokenize
  image_size: int
  view: image_preparation.Preprocessing = image_preparation.Preprocessing()


def classification_metrics(task: Task, scored: dict[str, np.ndarray],
                           num_classes: int) -> dict[str, float]:
  """DataComp's metrics of `zero_shot.score_images`'s per-image arrays (with "metadata" [N, M]
  for the group metrics)."""
  plain = zero_shot.classification_metrics(scored["rank"], scored["label"], num_classes)
  metrics = {"acc1": plain["top1"], "mean_per_class_recall": plain["mean_per_class_recall"]}
  if num_classes >= 5:  # DataComp's condition (zero_shot's top5 needs more than 5)
    metrics["acc5"] = float(np.mean(scored["rank"] < 5))
  for group_metric in task.group_metrics:
    metrics[group_metric.name] = worst_group_accuracy(
        scored["rank"] < group_metric.k, scored["metadata"][:, group_metric.column])
  if task.macro_f1:
    metrics["F1-macro_all"] = macro_f1(scored["prediction"], scored["label"])
  return metrics


def worst_group_accuracy(correct: np.ndarray, groups: np.ndarray) -> float:
  """The lowest mean of `correct` [N] over the values of `groups` [N] present (WILDS's
  worst-group metric, which leaves out empty groups)."""
  return float(min(np.mean(correct[groups == group]) for group in np.unique(groups)))


def macro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
  """The mean F1 score over the classes present in `labels` (WILDS's F1-macro, scikit-learn's
  f1_score(average="macro", labels=unique labels))."""
  scores = []
  for label in np.unique(labels):
    true_positives = np.sum((predictions == label) & (labels == label))
    errors = np.sum((predictions == label) != (labels == label))  # false positives and negatives
    scores.append(2 * true_positives / (2 * true_positives + errors))
  return float(np.mean(scores))


def retrieval_metrics(recalls: dict[str, float]) -> dict[str, float]:
  """`retrieval.recall_at_k`'s results under DataComp's names, with mean_recall@1."""
  metrics = {}
  for name, value in recalls.items():
    direction, k = name.split("_R@")
    metrics[f"{_RETRIEVAL_NAMES[direction]}@{k}"] = value
  metrics["mean_recall@1"] = (metrics["image_retrieval_recall@1"]
                              + metrics["text_retrieval_recall@1"]) / 2
  return metrics


def _prompts(found: benchmark_data.Found) -> tuple[list[str], list[str]]:
  """Class names and templates: the data's own, else CLIP_benchmark's, else TFDS's label names."""
  names, templates = benchmark_data.classnames_and_templates(found)
  names = names or benchmark_tasks.classnames(found.task)
  if names is None and found.tfds is not None:
    names = eval_data.label_names(found.tfds.name, data_dir=found.data_dir,
                                  mock_examples=found.mock_examples)
  if names is None:
    raise ValueError(f"{found.task.key}: {found.describe()} has no classnames.txt and "
                     "CLIP_benchmark lists none for it.")
  return names, templates or benchmark_tasks.templates(found.task)


def evaluate_task(found: benchmark_data.Found, model: Model, *,
                  batch_size: int) -> tuple[dict[str, float], int]:
  """(metrics with "main_metric", number of images) of one task."""
  task = found.task
  reader = dict(image_size=model.image_size, batch_size=batch_size, view=model.view)
  if task.kind == benchmark_tasks.LINEAR_PROBE:
    metrics, images = _linear_probe(found, model, reader)
  elif task.kind == benchmark_tasks.ASSOCIATION:
    metrics, images = _association(found, model, reader)
  elif benchmark_data.is_retrieval(found):
    counter = _Counter(benchmark_data.caption_batches(found, **reader))
    metrics = retrieval_metrics(retrieval.evaluate(
        model.encode_image, model.encode_text, model.tokenize, counter, batch_size=batch_size))
    images = counter.images
  else:
    metrics, images = _classification(found, model, reader)
  if task.main_metric not in metrics:
    raise ValueError(f"{task.key}: the data gives no {task.main_metric} (metrics: "
                     f"{', '.join(metrics)}).")
  return {**metrics, "main_metric": metrics[task.main_metric]}, images


def _classification(found: benchmark_data.Found, model: Model,
                    reader: dict) -> tuple[dict[str, float], int]:
  """Zero-shot classification (`classification_metrics`) with the task's class names."""
  names, templates = _prompts(found)
  classes = zero_shot.class_embeddings(model.encode_text, model.tokenize, names, templates,
                                       batch_size=reader["batch_size"])  # [C, E]
  counter = _Counter(benchmark_data.labelled_batches(found, **reader))
  scored = zero_shot.score_images(model.encode_image, classes, counter,
                                  batch_size=reader["batch_size"])
  if not counter.images:
    raise ValueError(f"{found.task.key}: {found.describe()} holds no images.")
  if scored["label"].max() >= len(names):
    raise ValueError(f"{found.task.key}: {found.describe()} has label {scored['label'].max()} "
                     f"but {len(names)} class names.")
  return classification_metrics(found.task, scored, len(names)), counter.images


def _linear_probe(found: benchmark_data.Found, model: Model,
                  reader: dict) -> tuple[dict[str, float], int]:
  """A linear probe's metrics (`linear_probe.evaluate`) on the task's TFDS splits."""
  data = found.tfds
  splits = [linear_probe.encode_split(model.encode_image, _Counter(eval_data.image_label_batches(
      data.name, split, **reader, data_dir=found.data_dir, mock_examples=found.mock_examples)),
      reader["batch_size"]) for split in (data.train_split, data.validation_split, data.split)]
  num_classes = len(eval_data.label_names(data.name, data_dir=found.data_dir,
                                          mock_examples=found.mock_examples))
  return linear_probe.evaluate(*splits, num_classes), sum(len(labels) for _, labels in splits)


def cue_prompt(cue: str) -> str:
  """WinoGAViL's prompt for a cue, as DataComp writes it: "A dog", "An apple"."""
  cue = cue.lower()
  return f"{'An' if cue[:1] in 'aeiou' else 'A'} {cue}"


def association_metrics(scores: Sequence[np.ndarray], truths: Sequence[np.ndarray]
                        ) -> dict[str, float]:
  """DataComp's WinoGAViL metrics: per cue, the candidates of the highest scores (as many as it
  has associations) against its associations by the Jaccard index; their mean over all cues, over
  those with 5, 6, 10 or 12 candidates, and with 5-6 and 10-12."""
  jaccards, sizes = [], []
  for cue_scores, truth in zip(scores, truths):
    chosen = np.zeros(len(cue_scores), bool)
    chosen[np.argsort(cue_scores, kind="stable")[len(cue_scores) - truth.sum():]] = True
    jaccards.append(np.sum(chosen & truth) / np.sum(chosen | truth))
    sizes.append(len(cue_scores))
  jaccards, sizes = np.array(jaccards), np.array(sizes)
  groups = {"avg_jaccard_score": sizes > 0, "jaccard_score_5": sizes == 5,
            "jaccard_score_6": sizes == 6, "jaccard_score_10": sizes == 10,
            "jaccard_score_12": sizes == 12, "jaccard_score_5-6": sizes <= 6,
            "jaccard_score_10-12": sizes >= 10}
  return {name: float(np.mean(jaccards[mask])) for name, mask in groups.items() if mask.any()}


def _association(found: benchmark_data.Found, model: Model,
                 reader: dict) -> tuple[dict[str, float], int]:
  """WinoGAViL (`association_metrics`): cue prompts against their candidate images."""
  instances = benchmark_data.association_instances(found)
  cues = encoding.l2_normalize(encoding.encode_in_batches(
      model.encode_text, model.tokenize([cue_prompt(cue) for cue, _ in instances]),
      reader["batch_size"]))  # [I, E]
  features, owners = [], []
  for batch in _Counter(benchmark_data.association_batches(found, **reader)):
    features.append(encoding.encode_in_batches(model.encode_image, batch["image"],
                                                reader["batch_size"]))
    owners.append(batch["instance"])
  features, owners = encoding.l2_normalize(np.concatenate(features)), np.concatenate(owners)
  scores = [features[owners == index] @ cues[index] for index in range(len(instances))]
  return association_metrics(scores, [truth for _, truth in instances]), len(owners)


class _Counter:
  """Passes batches through, counting their images and logging progress every 30 seconds."""

  def __init__(self, batches):
    self._batches, self.images, self._logged = iter(batches), 0, time.monotonic()

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self._batches)
    self.images += len(batch["image"])
    if time.monotonic() - self._logged > 30:
      logging.info("  %d images so far", self.images)
      self._logged = time.monotonic()
    return batch


def evaluate_suite(tasks: Sequence[Task], model: Model, *, data_dir: str, batch_size: int,
                   results: dict | None = None, save: Callable[[dict], None] | None = None,
                   mock_examples: int = 0) -> dict:
  """{"tasks": {key: {"title", "metrics", "data", "images", "seconds"}}, "absent": {key: why}}.

  Tasks already in `results["tasks"]` are kept, not run again; `save` gets the results after
  each task, so that a killed run resumes at the task it was on.
  """
  results = {"tasks": dict((results or {}).get("tasks", {})), "absent": {}}
  for number, task in enumerate(tasks, 1):
    prefix = f"[{number}/{len(tasks)}] {task.key}"
    if task.key in results["tasks"]:
      logging.info("%s: done before, kept", prefix)
      continue
    found = benchmark_data.find(task, data_dir, mock_examples=mock_examples)
    if isinstance(found, str):
      results["absent"][task.key] = found
      logging.info("%s: absent (%s)", prefix, found)
      continue
    logging.info("%s: %s", prefix, found.describe())
    start = time.monotonic()
    metrics, images = evaluate_task(found, model, batch_size=batch_size)
    results["tasks"][task.key] = {"title": task.title, "metrics": metrics,
                                  "data": found.describe(), "images": images,
                                  "seconds": round(time.monotonic() - start, 1)}
    logging.info("%s: %s %.4f on %d images in %.0f s", prefix, task.main_metric,
                 metrics["main_metric"], images, time.monotonic() - start)
    if save:
      save(results)
  return results


def average(tasks: Sequence[Task], results: dict) -> tuple[float | None, int]:
  """(mean main metric over the tasks with results, their number)."""
  scores = [results["tasks"][task.key]["metrics"]["main_metric"] for task in tasks
            if task.key in results["tasks"]]
  return (float(np.mean(scores)) if scores else None), len(scores)


def results_table(tasks: Sequence[Task], results: dict, *, name: str, pretrained: str) -> str:
  """A CSV header and row in open_clip's results layout (docs/openclip_results.csv): name,
  pretrained, the average over the tasks covered (their count in the column's title) and each
  task's main metric, empty where absent."""
  mean, covered = average(tasks, results)
  header = ["name", "pretrained", f"Average perf. on {covered} datasets",
            *(task.title for task in tasks)]
  row = [name, pretrained, "" if mean is None else f"{mean:.4f}",
         *(f"{results['tasks'][task.key]['metrics']['main_metric']:.4f}"
           if task.key in results["tasks"] else "" for task in tasks)]
  return "\n".join(",".join(_csv_field(field) for field in line) for line in (header, row)) + "\n"


def _csv_field(text: str) -> str:
  return f'"{text}"' if "," in text else text


def summary_lines(tasks: Sequence[Task], results: dict) -> list[str]:
  """A readable table: each task's main metric (or why it is absent), then the average."""
  lines = []
  for task in tasks:
    if task.key in results["tasks"]:
      entry = results["tasks"][task.key]
      lines.append(f"{task.title:<24} {entry['metrics']['main_metric']:.4f}  "
                   f"{task.main_metric} ({entry['images']} images)")
    else:
      lines.append(f"{task.title:<24} absent  {results['absent'].get(task.key, '')}")
  mean, covered = average(tasks, results)
  lines.append(f"{'Average':<24} {'-' if mean is None else f'{mean:.4f}'}  over {covered} of "
               f"{len(tasks)} tasks")
  return lines


def read_results(path: str) -> dict | None:
  """A results file written before, or None if there is none."""
  return json.loads(files.read_text(path)) if files.path(path).exists() else None
