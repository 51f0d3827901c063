"""Evaluators for `python -m clip_jax.evaluate`, on TFDS data prepared in data_dir:

  python -m clip_jax.evaluate --checkpoint=ckpt/vit-b-32 --config=configs/evaluate.py:cifar10 \
      --config.evals.cifar10.data_dir=/data/tensorflow_datasets

The argument picks evaluators by name, several with commas (`:imagenet,coco`); none: all of
  imagenet        zero-shot ImageNet top-1/top-5 (OpenAI's class names and 80 templates)
  cifar10         zero-shot CIFAR-10 (its 18 templates)
  coco            image <-> text Recall@1/5/10 on COCO's 5,000 test images (Karpathy's split)
  cifar10_probe   logistic regression on frozen image features, L2 chosen on held-out training
Any key of an evaluator can be set on the command line: `--config.evals.cifar10.batch_size=512`,
`--config.evals.cifar10.mock_examples=64` (random data of the dataset's features, to try it).
"""

from clip_jax import settings

EVALUATORS = dict(
    imagenet=dict(type="zero_shot", dataset="imagenet2012", split="validation"),
    cifar10=dict(type="zero_shot", dataset="cifar10", split="test"),
    coco=dict(type="retrieval", dataset="coco_captions", split="test"),
    cifar10_probe=dict(type="linear_probe", dataset="cifar10", train_split="train[:45000]",
                       validation_split="train[45000:]", test_split="test"),
)


def get_config(arg: str | None = None):
  names = arg.split(",") if arg else list(EVALUATORS)
  unknown = sorted(set(names) - set(EVALUATORS))
  if unknown:
    raise ValueError(f"config argument {unknown[0]!r}; allowed: {', '.join(EVALUATORS)}, or "
                     "several of them joined by commas.")
  config = settings.default_config()
  for name in names:
    config.evals[name] = settings.evaluator(**EVALUATORS[name])
  return config
