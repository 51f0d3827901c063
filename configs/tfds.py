"""CLIP on a TFDS image-caption dataset, by default COCO Captions (5 captions per image).

  python -m clip_jax.train --config=configs/tfds.py --workdir=workdirs/coco \
      --config.data.tfds.data_dir=/data/tensorflow_datasets

`:tiny` after the file name trains a small model (clip_training.py). Without the data at hand,
`--config.data.tfds.mock_examples=N` trains on N random examples of the dataset's features (for
instance `--config.data.tfds.dataset=laion400m --config.data.tfds.caption_feature=caption`).
"""

from clip_jax import settings


def get_config(arg: str | None = None):
  config = settings.sibling_config(__file__, "clip_training.py", arg)
  config.data.name = "tfds"
  config.data.tfds.dataset = "coco_captions"
  return config
