"""The trainer's evaluators: the data checks before training, and every evaluator end to end with
a tiny random model, on synthetic data and on TFDS mock data, encoded over 8 devices (their keys'
errors are tests/test_settings.py's)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clip_jax import encoding
from clip_jax import models
from clip_jax import settings
from clip_jax import sharding
from clip_jax.evaluation import evaluators
from clip_jax import image_preparation

DATA = settings.data_settings(name="synthetic", image_size=32, context_length=16, tokenizer="words")


def parse(evals: dict) -> dict[str, settings.Evaluator]:
  """The evaluators of a tiny-vit run on the synthetic data, as training parses them."""
  run = settings.parse(dict(model=dict(name="tiny-vit"), data=dict(tokenizer="words"),
                            total_steps=10, optim=dict(warmup_steps=1), evals=evals))
  assert run.data == DATA
  return run.evals
BATCH_SIZE = 12  # not a multiple of the 8 devices: the encoders pad


@pytest.fixture(scope="module")
def tiny_model():
  model = models.create_model("tiny-vit")
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                  jnp.zeros((1, 16), jnp.int32))
  mesh = sharding.create_mesh()
  return model, variables, mesh


@pytest.fixture(scope="module")
def encoders(tiny_model):
  """The sharded encoders, counting the texts they encode."""
  encode_image, encode_text = encoding.make_encoders(*tiny_model)
  texts_encoded = []

  def counting_encode_text(tokens):
    texts_encoded.append(len(tokens))
    return encode_text(tokens)

  return encode_image, counting_encode_text, texts_encoded


def run(evals, encoders, step=10):
  evals = parse(evals)
  evaluators.check_data(evals)
  return evaluators.run_evaluators(evals, *encoders[:2], step, data=DATA,
                                   view=image_preparation.Preprocessing())


def assert_metrics(results, expected_names):
  assert sorted(results) == sorted(expected_names)
  assert all(0.0 <= value <= 1.0 for name, value in results.items() if not name.endswith("/l2"))


def test_sharded_encoders_equal_the_model_on_one_device(tiny_model):
  model, variables, mesh = tiny_model
  encode_image, encode_text = encoding.make_encoders(model, variables, mesh)
  images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
  tokens = np.arange(5 * 16, dtype=np.int32).reshape(5, 16) % 100
  for encode, inputs, method in ((encode_image, images, model.encode_image),
                                 (encode_text, tokens, model.encode_text)):
    on_one_device = jax.jit(model.apply, static_argnames="method")(variables, inputs,
                                                                   method=method)
    np.testing.assert_allclose(encode(inputs), on_one_device, atol=1e-5)


def test_synthetic_zero_shot_and_retrieval(encoders):
  results = run({"zero_shot": dict(every_steps=10, num_images=16, batch_size=BATCH_SIZE),
                 "shapes": dict(type="retrieval", dataset="synthetic", every_steps=5,
                                num_images=16, batch_size=BATCH_SIZE)}, encoders)
  assert_metrics(results, [
      *(f"zero_shot/{attribute}_{metric}" for attribute in ("shape", "colour")
        for metric in ("top1_seen", "top1_heldout", "chance")),
      *(f"shapes/{direction}_R@{k}" for direction in ("image_to_text", "text_to_image")
        for k in (1, 5, 10))])
  lines = evaluators.summary_lines(
      parse({"zero_shot": dict(every_steps=10),
             "shapes": dict(type="retrieval", dataset="synthetic", every_steps=5)}), results)
  assert sorted(line.split(" ")[0] for line in lines) == ["shapes:", "zero-shot"]
  assert any(line.startswith("zero-shot top-1 on new images: shape ") for line in lines)


def test_cifar10_zero_shot_and_linear_probe_on_mock_data(encoders):
  _, _, texts_encoded = encoders
  texts_encoded.clear()
  tfds_keys = dict(dataset="cifar10", mock_examples=20, batch_size=BATCH_SIZE, every_steps=10)
  results = run({"cifar": dict(type="zero_shot", split="test", **tfds_keys),
                 "probe": dict(type="linear_probe", train_split="train[:50%]",
                               validation_split="train[50%:]", test_split="test", **tfds_keys)},
                encoders)
  assert_metrics(results, ["cifar/top1", "cifar/top5", "cifar/mean_per_class_recall",
                           "probe/top1", "probe/validation_top1", "probe/l2"])
  # The 10 classes x 18 CIFAR templates are encoded once, in batches of 12.
  assert texts_encoded == [BATCH_SIZE] * 15


def test_coco_captions_retrieval_on_mock_data(encoders):
  results = run({"coco": dict(type="retrieval", dataset="coco_captions", split="val",
                              mock_examples=10, every_steps=10, batch_size=BATCH_SIZE)},
                encoders)
  assert_metrics(results, [f"coco/{direction}_R@{k}" for k in (1, 5, 10)
                           for direction in ("image_to_text", "text_to_image")])
  assert results["coco/text_to_image_R@10"] == 1.0  # 10 images: each caption's is within 10


def test_each_evaluator_runs_at_its_own_steps_and_at_the_end():
  evals = parse({"zero_shot": dict(every_steps=4),
                 "coco": dict(type="retrieval", dataset="coco_captions", split="val",
                              every_steps=6),
                 "final": dict(type="retrieval", num_images=16)})
  assert [sorted(evaluators.due(evals, step, total_steps=10)) for step in (4, 6, 7, 10, 12)] == [
      ["zero_shot"], ["coco"], [], ["coco", "final", "zero_shot"], ["coco", "zero_shot"]]


@pytest.mark.parametrize("evaluator, message", [
    (dict(type="zero_shot", dataset="cifar10", split="test", templates="fancy"),
     r"evals\.bad\.templates='fancy'; allowed: imagenet80, imagenet7, cifar, simple, or ''"),
    (dict(type="zero_shot", dataset="no_such_dataset", split="test"),
     r"evals\.bad\.dataset='no_such_dataset' is neither a TFDS dataset nor one in data_dir "
     r"''; allowed: 'synthetic' or a TFDS dataset name\."),
    (dict(type="zero_shot", dataset="cifar10", split="test", mock_examples=4,
          classnames="imagenet"),
     r"evals\.bad\.classnames='imagenet' gives 1000 class names, but 'cifar10' has 10 classes"),
    (dict(type="zero_shot", dataset="cifar10", split="test", mock_examples=4,
          label_feature="fine_label"),
     r"evals\.bad\.label_feature='fine_label' is not a feature of 'cifar10'; allowed: id, image, "
     r"label\."),
])
def test_data_checks_name_the_key_the_value_and_what_is_allowed(evaluator, message):
  with pytest.raises(ValueError, match=message):
    evaluators.check_data(parse({"bad": evaluator}))


def test_data_that_is_not_there_fails_at_the_check(tmp_path):
  evals = parse({"cifar": dict(type="zero_shot", dataset="cifar10", split="test",
                               data_dir=str(tmp_path))})
  with pytest.raises(ValueError, match=r"evals\.cifar\.split='test' of 'cifar10' .*allowed: "
                                       r"none: the data is not prepared\."):
    evaluators.check_data(evals)
