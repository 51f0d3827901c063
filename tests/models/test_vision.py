"""The ViT's patch embedding: the matmul form computes OpenAI's strided convolution."""

import flax.linen as nn
import jax
import numpy as np

from clip_jax.models import vision


def test_patch_embedding_is_the_strided_convolution_with_the_same_kernel():
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 24, 24, 3))
  embedding = vision.PatchEmbedding(patch_size=8, width=16)
  variables = embedding.init(jax.random.PRNGKey(1), images)
  assert variables["params"]["kernel"].shape == (8, 8, 3, 16)  # nn.Conv's layout
  convolution = nn.Conv(16, (8, 8), strides=(8, 8), padding="VALID", use_bias=False)
  expected = convolution.apply(variables, images)                       # [2, 3, 3, 16]
  np.testing.assert_allclose(embedding.apply(variables, images), expected, rtol=1e-5, atol=1e-5)
