"""CLIP on a CSV/TSV table of image paths and captions (open_clip's `--dataset-type csv`).

  python -m clip_jax.train --config=configs/csv.py --workdir=workdirs/table \
      --config.data.csv.file=/data/train.tsv

`:tiny` after the file name trains a small model (clip_training.py). The table is tab-separated with
the columns `filepath` and `title` unless data.csv.separator, data.csv.image_column and
data.csv.caption_column say otherwise; relative image paths are relative to the table's folder. A
row whose image cannot be read is skipped and counted.
"""

from clip_jax import settings


def get_config(arg: str | None = None):
  config = settings.sibling_config(__file__, "clip_training.py", arg)
  config.data.name = "csv"
  return config
