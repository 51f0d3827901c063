"""Evaluation data: TFDS image-label and image-captions datasets (mock data), the synthetic images
with several captions each."""

import numpy as np

import input_pipeline
from clip_jax import settings
from input_pipeline import eval_data
from input_pipeline.sources import synthetic


def test_image_label_batches_keep_every_image_in_order():
  batches = list(eval_data.image_label_batches("cifar10", "test", image_size=24, batch_size=4,
                                               mock_examples=6))
  assert [len(batch["label"]) for batch in batches] == [4, 2]  # the last batch is shorter
  assert batches[0]["image"].shape == (4, 24, 24, 3) and batches[0]["image"].dtype == np.uint8
  assert batches[0]["label"].dtype == np.int32
  assert all(0 <= label < 10 for batch in batches for label in batch["label"])


def test_caption_batches_pad_the_captions_of_each_image():
  """coco_captions under mock data: several captions per image, as many as the mock draws."""
  batches = list(eval_data.caption_batches("coco_captions", "val", image_size=16, batch_size=3,
                                           mock_examples=4))
  assert [batch["image"].shape for batch in batches] == [(3, 16, 16, 3), (1, 16, 16, 3)]
  captions = batches[0]["captions"]  # bytes [3, K], rows padded with b""
  assert captions.ndim == 2 and captions.shape[0] == 3
  assert all(row[0] for row in captions)


def test_synthetic_images_come_with_every_phrasing_of_what_they_show():
  data = settings.data_settings(name="synthetic", seed=0, image_size=16, context_length=16,
                                tokenizer="words")
  batches = list(eval_data.synthetic_caption_batches(data, num_images=5, batch_size=4))
  reference = next(input_pipeline.create_eval_images(data, num_images=5, batch_size=5))
  np.testing.assert_array_equal(np.concatenate([batch["image"] for batch in batches]),
                                reference["image"])
  captions = np.concatenate([batch["captions"] for batch in batches])
  assert captions.shape == (5, len(synthetic.CAPTIONS["full"]))
  world = synthetic.World.from_settings(data)
  for index, image_captions in enumerate(captions):
    sample = synthetic.render(world, "eval", index)
    assert sample.caption.encode() in list(image_captions)  # its own caption among them
    assert all(world.shapes[sample.shape].encode() in caption for caption in image_captions)


def test_label_names_read_spaces_for_underscores():
  assert eval_data.label_names("food101")[:2] == ["apple pie", "baby back ribs"]
