"""CLIP on a weighted mixture of two WebDataset shard sets, e.g. LAION and CC12M.

  python -m clip_jax.train --config=configs/mixture.py --workdir=workdirs/mix \
      --config.data.sources.laion.webdataset.files='/data/laion/{00000..41407}.tar' \
      --config.data.sources.cc12m.webdataset.files='/data/cc12m/{00000..01242}.tar'

`:tiny` after the file name trains a small model (clip_training.py). Each source draws its share
of the samples by weight (here 4:1); a source may be of any stream type (webdataset, tfrecord,
tfds, csv) with its own keys, while the other data keys (augmentation, tokenizer, shuffling) are
shared.
"""

from clip_jax import settings


def get_config(arg: str | None = None):
  config = settings.sibling_config(__file__, "clip_training.py", arg)
  config.data.name = "mixture"
  config.data.sources.laion = settings.data_source(name="webdataset", weight=4.0)
  config.data.sources.cc12m = settings.data_source(name="webdataset", weight=1.0)
  return config
