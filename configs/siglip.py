"""SigLIP (Zhai et al. 2023) from scratch: the sigmoid loss, a MAP-pooled ViT and a bidirectional
text tower read at its last token, with the temperature (log 10) and bias (-10) the paper starts
from. Its argument chooses the scale:

  --config=configs/siglip.py        SigLIP B/16 at 224 px (ViT-B-16-SigLIP) on WebDataset shards
                                    (--config.data.webdataset.files=...), batch 32,768,
                                    bfloat16; captions in SigLIP's SentencePiece model, 64 tokens
                                    (--config.data.tokenizer_model=.../spiece.model)
  --config=configs/siglip.py:tiny   tiny-siglip on the built-in synthetic shapes: minutes on a
                                    laptop CPU, ending with zero-shot accuracies, as the
                                    quickstart's CLIP (configs/synthetic_demo.py)

On the synthetic shapes SigLIP learns shape more slowly than the quickstart's CLIP: their captions
repeat within a batch, and the sigmoid loss scores each repeat as a negative (benchmarks/RESULTS.md
compares towers and losses). Its recipe is made for batches of mostly distinct captions.
"""

from clip_jax import settings

SCALES = ("full", "tiny")


def get_config(arg: str | None = None):
  scale = arg or "full"
  if scale not in SCALES:
    raise ValueError(f"config argument {scale!r}; allowed: {', '.join(SCALES)}.")
  if scale == "tiny":
    config = settings.sibling_config(__file__, "synthetic_demo.py", None)
    config.model.name = "tiny-siglip"  # the demo's sizes: embed_dim is the image tower's width
  else:
    config = settings.sibling_config(__file__, "webdataset.py", "full")
    config.model.name = "ViT-B-16-SigLIP"
    config.data.tokenizer = "siglip"
  config.loss.name = "sigmoid"
  return config
