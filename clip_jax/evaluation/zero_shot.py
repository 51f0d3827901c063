"""Zero-shot classification: class names become text embeddings, each image takes the nearest.

Two evaluations: labelled images of any dataset (`evaluate_classification`: top-1, top-5 and
mean per-class recall) and the synthetic shapes (`evaluate_synthetic`: shape and colour, on seen
and held-out colour-shape pairs). Model-agnostic: the encoders are callables from numpy inputs to
numpy features (the trainer passes jitted `model.apply` closures), so the same code scores a
scratch model, a converted OpenAI checkpoint or a hand-built fake in a test.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

import input_pipeline
from clip_jax import encoding
from clip_jax import settings
from clip_jax.evaluation import ranking
from input_pipeline import tokenizers
from input_pipeline.sources import synthetic

# Prompt ensembles for the synthetic attributes; every word is in the synthetic vocabulary.
SHAPE_TEMPLATES = ("a picture of a {}", "a {}", "a photo of a {}")
COLOUR_TEMPLATES = ("something {}", "a {} thing", "a {} object")


def class_embeddings(encode_text: encoding.Encoder, tokenize: encoding.Tokenize,
                     classnames: Sequence[str], templates: Sequence[str], *,
                     batch_size: int = 256) -> np.ndarray:
  """[C, E]: per class, the mean of its L2-normalised prompt features, renormalised.

  Averaging over several phrasings (a prompt ensemble) smooths out the quirks of any one of them.
  A template marks the class name with "{}" (OpenAI's lists) or "{c}" (CLIP_benchmark's).
  """
  prompts = [template.format(name, c=name) for name in classnames for template in templates]
  features = encoding.encode_in_batches(encode_text, tokenize(prompts), batch_size)  # [C * T, E]
  features = encoding.l2_normalize(features.reshape(len(classnames), len(templates), -1))
  return encoding.l2_normalize(features.mean(axis=1))


def predict(image_features: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
  """Class index [N] of the most similar class embedding for image features [N, E].

  The image features need no normalising: a positive scale per image does not change the argmax.
  """
  return np.argmax(image_features @ class_embeddings.T, axis=-1)


def label_probabilities(image_features: np.ndarray, class_embeddings: np.ndarray,
                        logit_scale: float) -> np.ndarray:
  """[N, C]: the softmax over classes of unit image features' [N, E] cosine similarities to the
  class embeddings [C, E], times the model's learned scale, as the paper classifies."""
  logits = logit_scale * image_features @ class_embeddings.T
  logits -= logits.max(axis=-1, keepdims=True)
  return np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)


def top1_accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(predictions == labels))


def classification_metrics(true_class_ranks: np.ndarray, labels: np.ndarray,
                           num_classes: int) -> dict[str, float]:
  """Top-1, top-5 (given more than 5 classes) and mean per-class recall of ranks [N], labels [N].

  `true_class_ranks` are `ranking.ranks` of the true class (ties count against it). Mean
  per-class recall averages the top-1 recall of each class present in `labels`, so that on
  unbalanced data every class weighs the same.
  """
  correct = true_class_ranks < 1
  metrics = {"top1": float(np.mean(correct))}
  if num_classes > 5:
    metrics["top5"] = ranking.recall_at(true_class_ranks, 5)
  metrics["mean_per_class_recall"] = float(np.mean(
      [np.mean(correct[labels == label]) for label in np.unique(labels)]))
  return metrics


def score_images(encode_image: encoding.Encoder, classes: np.ndarray,
                 batches: Iterable[dict[str, np.ndarray]], *,
                 batch_size: int) -> dict[str, np.ndarray]:
  """Per image of labelled batches, against class embeddings [C, E]: the rank of its true class
  ("rank", `ranking.ranks`), the best-scoring class ("prediction") and every array of the batch
  but the image ("label" and any others, such as metadata), concatenated over the batches.

  `batches` yields {"image": [b, H, W, 3], "label": int [b], ...} with b <= batch_size; a label
  outside [0, C) has no true class, and so is never ranked first.
  """
  columns = {}
  for batch in batches:
    scores = encoding.encode_in_batches(encode_image, batch["image"], batch_size) @ classes.T
    true_class = batch["label"][:, None] == np.arange(len(classes))  # [b, C]
    row = {"rank": ranking.ranks(scores, true_class), "prediction": np.argmax(scores, axis=-1),
           **{key: value for key, value in batch.items() if key != "image"}}
    for key, value in row.items():
      columns.setdefault(key, []).append(value)
  return {key: np.concatenate(values) for key, values in columns.items()}


def evaluate_classification(encode_image: encoding.Encoder, encode_text: encoding.Encoder,
                            tokenize: encoding.Tokenize, batches: Iterable[dict[str, np.ndarray]],
                            classnames: Sequence[str], templates: Sequence[str], *,
                            batch_size: int) -> dict[str, float]:
  """Zero-shot metrics (`classification_metrics`) of labelled images (see `score_images`)."""
  classes = class_embeddings(encode_text, tokenize, classnames, templates,
                             batch_size=batch_size)  # [C, E]
  scored = score_images(encode_image, classes, batches, batch_size=batch_size)
  return classification_metrics(scored["rank"], scored["label"], len(classnames))


def _encode_eval_images(encode_image: encoding.Encoder, data: settings.Data, num_images: int,
                        batch_size: int):
  """Features [N, E] of the synthetic evaluation images, and their labels {name: [N]}."""
  features, labels = [], []
  for batch in input_pipeline.create_eval_images(data, num_images=num_images,
                                                 batch_size=batch_size):
    features.append(encoding.encode_in_batches(encode_image, batch.pop("image"), batch_size))
    labels.append(batch)
  return (np.concatenate(features),
          {key: np.concatenate([batch[key] for batch in labels]) for key in labels[0]})


def evaluate_synthetic(encode_image: encoding.Encoder, encode_text: encoding.Encoder,
                       data: settings.Data, *, num_images: int = 1000, batch_size: int = 256,
                       prefix: str = "zero_shot") -> dict[str, float]:
  """Classifies new synthetic images by shape and by colour from prompts alone.

  Accuracies are reported separately on seen and on held-out colour-shape combinations (the
  latter only if the settings hold any out); the gap between the two measures how well the model
  composes attributes rather than memorising pairs. Metrics are named "<prefix>/<metric>".
  """
  world = synthetic.World.from_settings(data)
  tokenize = tokenizers.create_tokenizer(data).tokenize
  batch_size = min(batch_size, num_images)
  classes = {
      "shape": class_embeddings(encode_text, tokenize, world.shapes, SHAPE_TEMPLATES,
                                batch_size=batch_size),
      "colour": class_embeddings(encode_text, tokenize, world.colours, COLOUR_TEMPLATES,
                                 batch_size=batch_size),
  }
  image_features, labels = _encode_eval_images(encode_image, data, num_images, batch_size)
  heldout = labels["heldout"]
  results = {}
  for attribute, embeddings in classes.items():
    predictions = predict(image_features, embeddings)
    for subset, mask in (("seen", ~heldout), ("heldout", heldout)):
      if mask.any():
        results[f"{prefix}/{attribute}_top1_{subset}"] = top1_accuracy(
            predictions[mask], labels[attribute][mask])
    results[f"{prefix}/{attribute}_chance"] = 1.0 / len(embeddings)
  return results


def summary(results: dict[str, float], prefix: str = "zero_shot") -> str:
  """One line of `evaluate_synthetic`'s results:
  "zero-shot shape 0.62 seen, 0.55 held-out | ..."."""
  parts = []
  for attribute in ("shape", "colour"):
    subsets = [f"{results[key]:.3f} {subset.replace('heldout', 'held-out')}"
               for subset in ("seen", "heldout")
               if (key := f"{prefix}/{attribute}_top1_{subset}") in results]
    parts.append(f"{attribute} {', '.join(subsets)} (chance "
                 f"{results[f'{prefix}/{attribute}_chance']:.3f})")
  return "zero-shot top-1 on new images: " + " | ".join(parts)
