"""The small scaling reproduction: four model sizes x four sample budgets on the synthetic data.

  python -m clip_jax.sweep --config=configs/scaling/synthetic.py --sweep_dir=workdirs/scaling
  python -m clip_jax.scaling_laws --sweep_dir=workdirs/scaling

The world has all eight shapes and eight colours (two of them close
to their neighbours). The error fitted is that of zero-shot text-to-image retrieval among 500 new
images, Recall@10: a caption such as "a small orange diamond in the top left" must rank its image
among the first ten, which rewards knowing all four attributes (shape, colour, size and
position). At these sizes Recall@1 stays within 0.01-0.16, a compressed range for a law, and
zero-shot shape classification barely leaves chance before 64,000 samples; colour is learnt within
a few thousand. `--metric=` fits any of them (the table has them all).
"""

import os

import ml_collections

# The quickstart's config, whose data, optimiser and evaluation every run shares.
BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "synthetic_demo.py")


def tower_sizes(width: int, layers: int) -> dict:
  """Both towers at one width and depth in heads of 32, the embedding at the width."""
  tower = dict(width=width, layers=layers, head_width=32)
  return dict(embed_dim=width, vision=tower, text=tower)


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.base = os.path.normpath(BASE)
  config.overrides = dict(
      data=dict(synthetic=dict(
          shapes=("circle", "square", "triangle", "star", "cross", "heart", "diamond", "ring"),
          colours=("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "purple"))),
      evals=dict(retrieval=dict(type="retrieval", dataset="synthetic", num_images=500)),
      checkpoint=dict(max_to_keep=1),
  )
  config.models = dict(
      w32=dict(overrides=tower_sizes(32, 2)),
      w64=dict(overrides=tower_sizes(64, 2)),
      w96=dict(overrides=tower_sizes(96, 3)),
      w128=dict(overrides=tower_sizes(128, 3)),
  )
  config.samples_seen = (16_000, 32_000, 64_000, 128_000)
  config.batch_sizes = (128,)
  config.evaluations = 4
  config.warmup_fraction = 0.05
  config.metric = "retrieval/text_to_image_R@10"
  return config
