"""Tiny models initialised once per session: compiling an init is the slow part of these tests."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clip_jax import models

BATCH = 4
END_OF_TEXT_POSITIONS = (3, 15, 7, 1)


def make_batch(config: models.CLIPConfig, batch: int = BATCH):
  """Random images and captions whose end-of-text token (the largest id) ends each caption."""
  image_rng, token_rng = jax.random.split(jax.random.PRNGKey(0))
  size, length, vocab = config.vision.image_size, config.text.context_length, config.text.vocab_size
  images = jax.random.normal(image_rng, (batch, size, size, 3))
  tokens = np.array(jax.random.randint(token_rng, (batch, length), 1, vocab - 1))
  for row in range(batch):
    position = END_OF_TEXT_POSITIONS[row % len(END_OF_TEXT_POSITIONS)]
    tokens[row, position] = vocab - 1
    tokens[row, position + 1:] = 0
  return images, jnp.asarray(tokens, jnp.int32)


def initialise(name: str):
  model = models.create_model(name)
  images, tokens = make_batch(model.config)
  return model, jax.jit(model.init)(jax.random.PRNGKey(0), images, tokens), images, tokens


@pytest.fixture(scope="session")
def tiny_vit():
  """(model, variables, images, tokens) of 'tiny-vit'."""
  return initialise("tiny-vit")


@pytest.fixture(scope="session")
def tiny_rn():
  """(model, variables, images, tokens) of 'tiny-rn'."""
  return initialise("tiny-rn")



@pytest.fixture(scope="session")
def tiny_siglip():
  """(model, variables, images, tokens) of 'tiny-siglip'."""
  return initialise("tiny-siglip")
