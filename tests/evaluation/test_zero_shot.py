"""Zero-shot evaluation with hand-built encoders whose right answers are known."""

import re

import numpy as np
import pytest

import input_pipeline
from clip_jax import encoding
from clip_jax import settings
from clip_jax.evaluation import zero_shot
from input_pipeline import tokenizers
from input_pipeline.sources import synthetic

NUM_IMAGES = 240
ATTRIBUTE_KEYS = ["zero_shot/shape_top1_seen", "zero_shot/shape_top1_heldout",
                  "zero_shot/colour_top1_seen", "zero_shot/colour_top1_heldout"]


def data_settings(**knobs) -> settings.Data:
  return settings.data_settings(name="synthetic", seed=0, image_size=32, context_length=16,
                                tokenizer="words", **knobs)


def oracle_encoders(data):
  """Encoders that know the true attributes: image -> onehot(shape) + onehot(colour), a prompt ->
  the onehot of the shape or colour it names. Zero rows (padding) encode to zero."""
  world = synthetic.World.from_settings(data)
  num_shapes = len(world.shapes)
  dimension = num_shapes + len(world.colours)
  tokenizer = tokenizers.create_tokenizer(data)
  word_ids = tokenizer.tokenize(list(world.shapes) + list(world.colours))[:, 1]
  attributes = {}
  for batch in input_pipeline.create_eval_images(data, num_images=NUM_IMAGES, batch_size=64):
    for image, shape, colour in zip(batch["image"], batch["shape"], batch["colour"]):
      attributes[image.tobytes()] = (shape, num_shapes + colour)

  def encode_image(images):
    features = np.zeros((len(images), dimension))
    for row, image in enumerate(images):
      features[row, list(attributes.get(image.tobytes(), ()))] = 1.0
    return features

  def encode_text(tokens):
    return (tokens[:, :, None] == word_ids).any(axis=1).astype(float)  # [N, S + C]

  return encode_image, encode_text


def test_an_encoder_that_sees_the_attributes_is_always_right():
  data = data_settings()
  results = zero_shot.evaluate_synthetic(*oracle_encoders(data), data, num_images=NUM_IMAGES,
                                         batch_size=64)
  assert {key: results[key] for key in ATTRIBUTE_KEYS} == dict.fromkeys(ATTRIBUTE_KEYS, 1.0)
  assert results["zero_shot/shape_chance"] == results["zero_shot/colour_chance"] == 1 / 6


def test_a_constant_encoder_is_at_chance():
  def constant(inputs):
    return np.ones((len(inputs), 8))

  results = zero_shot.evaluate_synthetic(constant, constant, data_settings(),
                                         num_images=NUM_IMAGES, batch_size=64)
  for key in ATTRIBUTE_KEYS:
    assert abs(results[key] - 1 / 6) < 0.12, (key, results[key])


def test_without_heldout_pairs_only_seen_accuracies_are_reported():
  data = data_settings(holdout_diagonals=())
  results = zero_shot.evaluate_synthetic(*oracle_encoders(data), data, num_images=64)
  assert sorted(results) == ["zero_shot/colour_chance", "zero_shot/colour_top1_seen",
                             "zero_shot/shape_chance", "zero_shot/shape_top1_seen"]


def test_class_embeddings_average_normalised_prompt_features():
  features = {"a cat": [3.0, 0.0], "one cat": [1.0, 1.0], "a dog": [0.0, 2.0], "one dog": [0, 5]}
  prompts = list(features)

  def tokenize(texts):
    return np.array([[prompts.index(text)] for text in texts])

  def encode_text(tokens):
    return np.array([features[prompts[index]] for index in tokens[:, 0]])

  embeddings = zero_shot.class_embeddings(encode_text, tokenize, ["cat", "dog"],
                                          ["a {}", "one {}"], batch_size=3)
  cat = np.array([1.0, 0.0]) + np.array([1.0, 1.0]) / np.sqrt(2)
  np.testing.assert_allclose(embeddings, [cat / np.linalg.norm(cat), [0.0, 1.0]])


def test_encoders_always_see_one_batch_size():
  seen_shapes = []

  def encode(inputs):
    seen_shapes.append(inputs.shape)
    return inputs[:, :1] * 2

  features = encoding.encode_in_batches(encode, np.arange(1, 11.0).reshape(5, 2), batch_size=2)
  np.testing.assert_array_equal(features, [[2.0], [6.0], [10.0], [14.0], [18.0]])
  assert seen_shapes == [(2, 2)] * 3


def test_predict_and_accuracy():
  classes = np.array([[1.0, 0.0], [0.0, 1.0]])
  predictions = zero_shot.predict(np.array([[5.0, 1.0], [0.1, 0.2], [2.0, -1.0]]), classes)
  np.testing.assert_array_equal(predictions, [0, 1, 0])
  assert zero_shot.top1_accuracy(predictions, np.array([0, 1, 1])) == pytest.approx(2 / 3)


def test_prompts_use_only_words_the_model_was_trained_on():
  vocabulary = set(synthetic.vocabulary())
  for template in zero_shot.SHAPE_TEMPLATES + zero_shot.COLOUR_TEMPLATES:
    assert set(re.findall(r"[a-z]+", template)) <= vocabulary, template


def test_summary_names_both_attributes_and_subsets():
  line = zero_shot.summary({"zero_shot/shape_top1_seen": 0.5, "zero_shot/shape_top1_heldout": 0.25,
                            "zero_shot/shape_chance": 1 / 6, "zero_shot/colour_top1_seen": 1.0,
                            "zero_shot/colour_chance": 1 / 6})
  assert "shape 0.500 seen, 0.250 held-out (chance 0.167)" in line
  assert "colour 1.000 seen (chance 0.167)" in line


def test_top5_and_mean_per_class_recall_with_unbalanced_classes():
  # 7 classes; the true class of the four images ranks 0, 3, 5 and 6.
  scores = np.array([[9, 1, 2, 3, 4, 5, 6], [1, 9, 8, 7, 2, 0, 0], [1, 2, 3, 4, 5, 0, 0.5],
                     [1, 2, 3, 4, 5, 6, 0.5]], float)
  labels = np.array([0, 4, 6, 6])
  true_class = labels[:, None] == np.arange(7)
  metrics = zero_shot.classification_metrics(zero_shot.ranking.ranks(scores, true_class), labels,
                                             num_classes=7)
  assert metrics == pytest.approx({"top1": 0.25, "top5": 0.5, "mean_per_class_recall": 1 / 3})


def test_mean_per_class_recall_weighs_every_class_alike():
  labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 2])
  true_class_ranks = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 0])  # class 1's one image is missed
  metrics = zero_shot.classification_metrics(true_class_ranks, labels, num_classes=3)
  assert metrics == pytest.approx({"top1": 0.9, "mean_per_class_recall": 2 / 3})  # no top-5


def fake_classification(num_classes, labels, confusions):
  """Encoders for images whose pixel is their label and prompts naming a class: the image of
  label l encodes to class l's direction, or nearer class c's where confusions[l] = c."""
  classnames = [f"class{index}" for index in range(num_classes)]
  prompts_seen = []

  def tokenize(texts):
    prompts_seen.extend(texts)
    return np.array([[classnames.index(text.split()[-1])] for text in texts])

  def encode_text(tokens):
    return np.eye(num_classes)[tokens[:, 0]]

  def encode_image(images):
    seen = images.reshape(len(images), -1)[:, 0]
    confused = [confusions.get(label, label) for label in seen]
    return np.eye(num_classes)[confused] + 0.5 * np.eye(num_classes)[seen]

  images = np.asarray(labels, np.uint8).reshape(-1, 1, 1, 1)
  batches = [{"image": images[start:start + 4], "label": np.asarray(labels[start:start + 4])}
             for start in range(0, len(labels), 4)]
  return classnames, tokenize, encode_text, encode_image, batches, prompts_seen


def test_evaluate_classification_from_prompts_encoded_once():
  labels = [0, 0, 0, 1, 1, 2, 3, 4, 5, 5, 6]
  classnames, tokenize, encode_text, encode_image, batches, prompts_seen = fake_classification(
      7, labels, confusions={5: 6})  # the two images of class 5 look like class 6
  metrics = zero_shot.evaluate_classification(encode_image, encode_text, tokenize, batches,
                                              classnames, ["a {}", "the {}"], batch_size=4)
  assert metrics == pytest.approx({"top1": 9 / 11, "top5": 1.0, "mean_per_class_recall": 6 / 7})
  assert len(prompts_seen) == 7 * 2  # the class embeddings, once for all image batches


def test_a_collapsed_model_gets_nothing_right():
  """Every class scores the same: ties count against the true class (argmax would pick 0)."""
  labels = [0, 1, 2, 0]
  classnames, tokenize, _, _, batches, _ = fake_classification(3, labels, {})

  def constant(inputs):
    return np.ones((len(inputs), 3))

  metrics = zero_shot.evaluate_classification(constant, constant, tokenize, batches, classnames,
                                              ["a {}"], batch_size=4)
  assert metrics == {"top1": 0.0, "mean_per_class_recall": 0.0}
