"""A paper-scale scaling sweep on real data, after Cherti et al. 2023 ("Reproducible scaling laws
for contrastive language-image learning"): ViT-B/32, B/16 and L/14 at three sample budgets, each
evaluated by zero-shot ImageNet accuracy and the 38-task benchmark.

  python -m clip_jax.sweep --config=configs/scaling/paper.py --sweep_dir=/shared/sweeps/paper \
      --config.overrides.data.webdataset.files='/data/laion2b/{000000..231349}.tar' --action=slurm

9 runs from 3 B to 34 B samples seen at a global batch of 86,016 (Cherti et al.'s 3 B and 13 B
budgets used smaller batches; their fits show the batch matters little at these sizes). Set the
ImageNet data_dir with `--config.overrides.evals.imagenet.data_dir=...` and the benchmark's with
`--config.overrides.evals.datacomp.data_dir=...` (docs/evaluation.md): `python -m
clip_jax.scaling_laws --metric=datacomp/average` then fits the 38-task average, and
`--metric=datacomp/<task key>` one task (e.g. datacomp/vtab/cifar100). Every run is an ordinary
training run of configs/webdataset.py with these overrides; --action=slurm or --action=commands
hands them to a cluster, and `python -m clip_jax.scaling_laws --sweep_dir=...` fits the laws.
"""

import os

import ml_collections

BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "webdataset.py")


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.base = os.path.normpath(BASE)
  config.overrides = dict(
      # required: the shards, e.g. /data/laion2b/{000000..231349}.tar
      data=dict(webdataset=dict(files="")),
      evals=dict(imagenet=dict(type="zero_shot", dataset="imagenet2012", split="validation",
                               data_dir=""),
                 datacomp=dict(type="benchmark", dataset="datacomp", data_dir="")),
      optim=dict(learning_rate=1e-3),
  )
  config.models = dict(
      b32=dict(name="ViT-B-32"),
      b16=dict(name="ViT-B-16"),
      l14=dict(name="ViT-L-14", overrides=dict(remat=True)),
  )
  config.samples_seen = (3_000_000_000, 13_000_000_000, 34_000_000_000)
  config.batch_sizes = (86_016,)
  config.evaluations = 8
  config.warmup_fraction = 0.01
  config.metric = "imagenet/top1"
  return config
