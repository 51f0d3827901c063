"""CLIP on TFRecord files of tf.train.Example (img2dataset's `--output_format tfrecord`).

  python -m clip_jax.train --config=configs/tfrecord.py --workdir=workdirs/cc12m \
      --config.data.tfrecord.files='/data/cc12m/*.tfrecord'

`:tiny` after the file name trains a small model (clip_training.py). The image bytes and the caption
are the features `data.tfrecord.image_feature` and `data.tfrecord.caption_feature` (by default "jpg"
and "txt"); a caption feature may hold several captions, of which each epoch draws one.
"""

from clip_jax import settings


def get_config(arg: str | None = None):
  config = settings.sibling_config(__file__, "clip_training.py", arg)
  config.data.name = "tfrecord"
  return config
