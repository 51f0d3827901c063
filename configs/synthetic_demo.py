"""The quickstart: a small CLIP trained from scratch on the built-in synthetic shapes dataset.

  python -m clip_jax.train --config=configs/synthetic_demo.py --workdir=workdirs/demo

It ends by printing the zero-shot accuracies (shape and colour, on seen and on held-out
colour-shape combinations) and the benchmark suite's scores on the synthetic world's tasks (the
`benchmark` evaluator, docs/evaluation.md), and writing training_curves.png in the workdir. Every
other setting is `clip_jax.settings`' default.
"""

from clip_jax import settings


def get_config():
  config = settings.default_config()
  config.total_steps = 1000
  config.global_batch_size = 128
  config.log_every_steps = 25

  # 24 pixels in 4-pixel patches: 36 tokens, so that 1000 steps take minutes on a laptop CPU.
  config.model.name = "tiny-vit"
  overrides = config.model.overrides
  overrides.embed_dim = 128
  overrides.vision.image_size = 24
  overrides.vision.patch_size = 4
  overrides.vision.width = 128
  overrides.vision.layers = 3
  overrides.text.vocab_size = 128  # The synthetic captions' words.
  overrides.text.width = 128

  config.data.tokenizer = "words"
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 50
  config.checkpoint.every_steps = 250
  config.evals.zero_shot = settings.evaluator(every_steps=250, num_images=1000)
  config.evals.benchmark = settings.evaluator(type="benchmark", dataset="synthetic",
                                              every_steps=500, num_images=500)
  return config
