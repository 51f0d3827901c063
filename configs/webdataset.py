"""CLIP on WebDataset tar shards (the layout img2dataset writes for LAION, DataComp, CC12M).

  python -m clip_jax.train --config=configs/webdataset.py --workdir=workdirs/laion \
      --config.data.webdataset.files='/data/laion400m/{00000..41407}.tar'

`:tiny` after the file name trains a small model (clip_training.py). Shards can be local or on any
filesystem tf.io.gfile reads (gs://...); `data.webdataset.files` is a brace pattern, a glob or a
list. Write shards from your own images with `python -m input_pipeline.write_shards`.
"""

from clip_jax import settings


def get_config(arg: str | None = None):
  config = settings.sibling_config(__file__, "clip_training.py", arg)
  config.data.name = "webdataset"
  return config
