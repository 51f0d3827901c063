"""Image normalisation shared by every data source.

CLIP models are trained and evaluated on images scaled to [0, 1] and then
standardised per channel with the statistics OpenAI used; weights converted
from the released checkpoints only work with exactly these constants.
"""
import tensorflow as tf

# Per-channel RGB statistics from OpenAI's CLIP preprocessing.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize_images(images: tf.Tensor) -> tf.Tensor:
  """Maps uint8 images [..., H, W, 3] to CLIP-standardised float32."""
  images = tf.cast(images, tf.float32) / 255.0
  return (images - CLIP_MEAN) / CLIP_STD
