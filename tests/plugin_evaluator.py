"""An evaluator defined outside clip_jax and registered as a plug-in (docs/extending.md): the
modality gap of Liang et al. 2022 ("Mind the Gap"), the distance between the centres of the
normalised image and text features, on new images of the synthetic world and their captions.
tests/test_extending.py runs it at the end of a training run; `model.plugins=("plugin_evaluator",)`
imports this module wherever the run's config is parsed."""

from __future__ import annotations

import numpy as np

from clip_jax import encoding
from clip_jax import settings
from input_pipeline import eval_data
from input_pipeline import tokenizers


def modality_gap(name, evaluator, encode_image, encode_text, data, view) -> dict[str, float]:
  del view  # the synthetic world's images are made at the model's size
  images, captions = [], []
  for batch in eval_data.synthetic_caption_batches(data, num_images=evaluator.num_images,
                                                   batch_size=evaluator.batch_size):
    images.append(encoding.encode_in_batches(encode_image, batch["image"], evaluator.batch_size))
    captions += [image_captions[0].decode() for image_captions in batch["captions"]]
  text = encoding.encode_in_batches(
      encode_text, tokenizers.create_tokenizer(data).tokenize(captions), evaluator.batch_size)
  image_centre = encoding.l2_normalize(np.concatenate(images)).mean(axis=0)   # [E]
  text_centre = encoding.l2_normalize(text).mean(axis=0)                      # [E]
  return {f"{name}/modality_gap": float(np.linalg.norm(image_centre - text_centre))}


KIND = settings.EVALUATORS.register(settings.EvaluatorKind(
    name="modality_gap", run=modality_gap, on_synthetic=((), ("num_images",)), on_tfds=None))
