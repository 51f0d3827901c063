"""CLIP on real image-text data: what the data configs (webdataset.py, tfrecord.py, tfds.py,
csv.py, mixture.py) share; they add the source. Their argument chooses the scale:

  --config=configs/webdataset.py         the paper's ViT-B/32 run (clip_jax.settings' defaults):
                                         224 px, batch 32,768, 12.8 B samples seen; bfloat16
                                         compute, unrolled blocks, no remat: the fastest
                                         settings that fit v5e-64 and v5p-128 (clip_jax.plan)
  --config=configs/webdataset.py:tiny    a small ViT at 64 px, batch 64, 100 steps: to try a
                                         data source or the pipeline on a laptop CPU
"""

from clip_jax import settings

SCALES = ("full", "tiny")


def get_config(arg: str | None = None):
  scale = arg or "full"
  if scale not in SCALES:
    raise ValueError(f"config argument {scale!r}; allowed: {', '.join(SCALES)}.")
  config = settings.default_config()
  if scale == "full":
    config.model.overrides.dtype = "bfloat16"
  if scale == "tiny":
    config.total_steps = 100
    config.global_batch_size = 64
    config.log_every_steps = 10
    config.model.name = "tiny-vit"
    overrides = config.model.overrides
    overrides.embed_dim = 128
    overrides.vision.image_size = 64
    overrides.vision.width = 128
    overrides.vision.layers = 3
    overrides.text.context_length = 77
    overrides.text.vocab_size = 49_408  # CLIP's BPE
    overrides.text.width = 128
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 10
    config.checkpoint.every_steps = 50
  return config
