"""The quickstart: a small CLIP trained from scratch on the built-in synthetic shapes dataset.

  python -m clip_jax.train --config=configs/synthetic_demo.py --workdir=workdirs/demo

A few minutes on a 2-core CPU; it ends by printing the zero-shot accuracies (shape and colour, on
seen and on held-out colour-shape combinations) and writing training_curves.png in the workdir.
"""

import ml_collections

# 24 pixels in 4-pixel patches: 36 tokens, so that 1000 steps fit the quickstart's few minutes.
IMAGE_SIZE = 24
CONTEXT_LENGTH = 16


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.total_steps = 1000
  config.global_batch_size = 128
  config.log_every_steps = 25
  config.nonfinite = "stop"  # or "skip": drop updates whose loss or gradients are not finite.

  config.model = ml_collections.ConfigDict()
  config.model.name = "tiny-vit"
  config.model.overrides = ml_collections.ConfigDict(dict(
      embed_dim=128,
      vision=dict(image_size=IMAGE_SIZE, patch_size=4, width=128, layers=3),
      text=dict(context_length=CONTEXT_LENGTH, vocab_size=128, width=128, layers=2),
  ))

  config.data = ml_collections.ConfigDict(dict(
      name="synthetic", seed=0, image_size=IMAGE_SIZE, context_length=CONTEXT_LENGTH,
      tokenizer="words"))

  # blockwise=True: the same loss tile by tile, for batches whose [b, N] logits do not fit
  # (clip_jax/blockwise_losses.py).
  config.loss = ml_collections.ConfigDict(dict(name="softmax", blockwise=False, tile_size=1024))

  config.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.2, warmup_steps=50,
      grad_clip_norm=1.0, end_learning_rate=0.0))

  # FLIP (clip_jax/flip.py): drop this fraction of each image's patches in training (0: off), and
  # train the last unmasked_steps steps on whole images again.
  config.flip = ml_collections.ConfigDict(dict(mask_ratio=0.0, unmasked_steps=0))

  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))

  config.checkpoint = ml_collections.ConfigDict(dict(every_steps=250, max_to_keep=2))

  # Several processes (clip_jax/distributed.py): mode "auto" on a TPU pod slice or under SLURM,
  # "explicit" with coordinator_address, num_processes and process_id.
  config.distributed = ml_collections.ConfigDict(dict(
      mode="off", coordinator_address="", num_processes=0, process_id=-1, local_device_ids=()))

  config.evals = ml_collections.ConfigDict()
  config.evals.zero_shot = ml_collections.ConfigDict(dict(every_steps=250, num_images=1000))
  return config
