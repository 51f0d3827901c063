"""Evaluation data: labelled images and images with several captions, in a fixed order.

Every image gets the model's evaluation view (`preprocessing.eval_image` with the checkpoint's
resize mode and filter, by default OpenAI's: shorter side to the image size, bicubic, centre crop;
uint8, the model standardises). Nothing is shuffled, repeated or dropped:
an image that does not decode stops the evaluation rather than quietly changing the test set.
Every process reads the whole split (the evaluators gather features on every process anyway).

TFDS datasets are read by name, split (slicing works: "train[:90%]") and `data_dir`;
`mock_examples=N` reads N random examples of the dataset's features instead of its files
(`tfds.testing.mock_data`), as the training source does.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf
import tensorflow_datasets as tfds

from clip_jax import settings
from clip_jax import image_preparation
from input_pipeline import BatchIterator
from input_pipeline import preprocessing
from input_pipeline.sources import synthetic
from input_pipeline.sources import tfds_datasets


def _maybe_mocked(mock_examples: int):
  if mock_examples:
    return tfds.testing.mock_data(num_examples=mock_examples)
  return contextlib.nullcontext()


def tfds_builder(dataset: str, *, data_dir: str = "",
                 mock_examples: int = 0) -> tfds.core.DatasetBuilder:
  with _maybe_mocked(mock_examples):
    return tfds.builder(dataset, data_dir=data_dir or None)


def label_names(dataset: str, *, data_dir: str = "", mock_examples: int = 0,
                label_feature: str = "label") -> list[str]:
  """The dataset's class names in label order, underscores turned into spaces."""
  features = tfds_builder(dataset, data_dir=data_dir, mock_examples=mock_examples).info.features
  return [name.replace("_", " ") for name in features[label_feature].names]


def _read_tfds(dataset: str, split: str, *, data_dir: str, mock_examples: int,
               image_feature: str) -> tf.data.Dataset:
  """TFDS examples in their stored order, with the image as encoded bytes.

  Under mock data the images are decoded and encoded again as PNG: with `SkipDecoding`, TFDS's
  mock encodes whole random examples first, which fails on datasets with sequences of unequal
  length such as coco_captions' `objects` (TFDS 4.9.10).
  """
  builder = tfds_builder(dataset, data_dir=data_dir, mock_examples=mock_examples)
  if not mock_examples:
    return builder.as_dataset(split=split, shuffle_files=False,
                              decoders={image_feature: tfds.decode.SkipDecoding()})
  with _maybe_mocked(mock_examples):
    examples = builder.as_dataset(split=split, shuffle_files=False)
  return examples.map(lambda example: {**example,
                                       image_feature: tf.io.encode_png(example[image_feature])})


def evaluation_image(image_bytes: tf.Tensor, image_size: int,
                     view: image_preparation.Preprocessing) -> tf.Tensor:
  """uint8 [size, size, 3]: the model's evaluation view of an encoded image."""
  return preprocessing.eval_image(image_bytes, image_size, view.resize_mode, view.interpolation)


def image_label_batches(dataset: str, split: str, *, image_size: int, batch_size: int,
                        view: image_preparation.Preprocessing = image_preparation.Preprocessing(),
                        data_dir: str = "", mock_examples: int = 0, image_feature: str = "image",
                        label_feature: str = "label") -> BatchIterator:
  """{"image": uint8 [b, size, size, 3], "label": int32 [b]}; the last batch may be shorter."""
  @tf.autograph.experimental.do_not_convert
  def preprocess(example):
    return {"image": evaluation_image(example[image_feature], image_size, view),
            "label": tf.cast(example[label_feature], tf.int32)}

  examples = _read_tfds(dataset, split, data_dir=data_dir, mock_examples=mock_examples,
                        image_feature=image_feature)
  return batches(examples.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE), batch_size)


def caption_batches(dataset: str, split: str, *, image_size: int, batch_size: int,
                    view: image_preparation.Preprocessing = image_preparation.Preprocessing(),
                    data_dir: str = "", mock_examples: int = 0, image_feature: str = "image",
                    caption_feature: str = tfds_datasets.CAPTION_FEATURE) -> BatchIterator:
  """Images with all their captions: {"image": uint8 [b, size, size, 3], "captions": bytes [b, K]}.

  K is the most captions of an image in the batch; shorter rows are padded with b"". The
  captions are a path into the example, as for training ("captions/text" for COCO).
  """
  @tf.autograph.experimental.do_not_convert
  def preprocess(example):
    captions = tfds_datasets.feature(example, caption_feature)
    return {"image": evaluation_image(example[image_feature], image_size, view),
            "captions": tf.reshape(captions, [-1])}

  examples = _read_tfds(dataset, split, data_dir=data_dir, mock_examples=mock_examples,
                        image_feature=image_feature)
  return batches(examples.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE), batch_size)


def synthetic_caption_batches(data: settings.Data, *, num_images: int,
                              batch_size: int) -> BatchIterator:
  """New synthetic images, each with every full phrasing of what it shows (8 captions).

  The images of `input_pipeline.create_eval_images` ("eval" seed stream, never training images),
  in the same batch format as `caption_batches`.
  """
  world = synthetic.World.from_settings(data)
  captions = [synthetic.eval_captions(world, index) for index in range(num_images)]  # [N][8]
  images = synthetic.examples(data, tf.data.Dataset.range(num_images), split="eval")
  examples = tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices(captions)).map(
      lambda example, image_captions: {"image": example["image"], "captions": image_captions})
  return batches(examples, batch_size)


def batches(examples: tf.data.Dataset, batch_size: int) -> BatchIterator:
  """The examples in order, in batches padded to the longest row (captions with b"")."""
  return BatchIterator(examples.padded_batch(batch_size).prefetch(tf.data.AUTOTUNE))
