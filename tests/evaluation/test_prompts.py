"""The shipped class names and templates: complete, in label order, one slot per template."""

import pytest

from clip_jax.evaluation import prompts


@pytest.mark.parametrize("name, count", [("imagenet80", 80), ("imagenet7", 7), ("cifar", 18),
                                         ("simple", 1)])
def test_template_sets(name, count):
  templates = prompts.templates(name)
  assert len(templates) == len(set(templates)) == count
  assert all(template.count("{}") == 1 for template in templates)


@pytest.mark.parametrize("name, count, distinct", [("imagenet", 1000, 998), ("cifar10", 10, 10),
                                                   ("cifar100", 100, 100)])
def test_class_name_sets(name, count, distinct):
  # OpenAI's ImageNet list names two pairs of classes alike ("missile", "sunglasses").
  assert len(prompts.classnames(name)) == count and len(set(prompts.classnames(name))) == distinct


def test_class_names_are_in_label_order():
  imagenet = prompts.classnames("imagenet")
  assert imagenet[:3] == ("tench", "goldfish", "great white shark")
  assert imagenet[-1] == "toilet paper"
  assert prompts.classnames("cifar10") == ("airplane", "automobile", "bird", "cat", "deer", "dog",
                                           "frog", "horse", "ship", "truck")
  # TFDS's CIFAR-100 labels are the fine class names in alphabetical order, with underscores.
  cifar100 = prompts.classnames("cifar100")
  assert list(cifar100) == sorted(cifar100) and "aquarium fish" in cifar100


def test_dataset_defaults():
  assert prompts.dataset_prompts("imagenet2012") == ("imagenet", "imagenet80")
  assert prompts.dataset_prompts("cifar100") == ("cifar100", "cifar")
  assert prompts.dataset_prompts("food101") == ("tfds", "imagenet80")
