"""Initialisation follows OpenAI's `initialize_parameters`, checked on sample statistics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clip_jax import models

WIDTH = 256
LAYERS = 4
PATCH = 16


@pytest.fixture(scope="module")
def mid_size_params():
  """A scanned mid-size ViT CLIP: every block's slice is checked, as each layer is drawn apart."""
  model = models.create_model(
      "tiny-vit", embed_dim=WIDTH, scan=True,
      vision=dict(image_size=64, patch_size=PATCH, width=WIDTH, layers=LAYERS),
      text=dict(vocab_size=2048, width=WIDTH, layers=LAYERS))
  images = jnp.zeros((1, 64, 64, 3))
  tokens = jnp.zeros((1, model.config.text.context_length), jnp.int32)
  return jax.jit(model.init)(jax.random.PRNGKey(0), images, tokens)["params"]


def assert_std(array, expected, tolerance=0.1):
  std = float(np.std(np.asarray(array)))
  assert abs(std / expected - 1) < tolerance, (std, expected)


BLOCK_STDS = {
    ("attn", "in_proj"): WIDTH ** -0.5,
    ("attn", "out_proj"): WIDTH ** -0.5 * (2 * LAYERS) ** -0.5,
    ("mlp", "c_fc"): (2 * WIDTH) ** -0.5,
    ("mlp", "c_proj"): WIDTH ** -0.5 * (2 * LAYERS) ** -0.5,
}


@pytest.mark.parametrize("tower", ["visual", "text"])
def test_transformer_blocks(mid_size_params, tower):
  blocks = mid_size_params[tower]["transformer"]["resblocks"]
  for (part, dense), std in BLOCK_STDS.items():
    kernels = blocks[part][dense]["kernel"]
    for layer in range(LAYERS):
      assert_std(kernels[layer], std)
    assert not np.allclose(kernels[0], kernels[1])
    np.testing.assert_array_equal(blocks[part][dense]["bias"], 0.0)
  for norm in ("ln_1", "ln_2"):
    np.testing.assert_array_equal(blocks[norm]["scale"], 1.0)
    np.testing.assert_array_equal(blocks[norm]["bias"], 0.0)


def test_embeddings_and_projections(mid_size_params):
  text, visual = mid_size_params["text"], mid_size_params["visual"]
  assert_std(text["token_embedding"]["embedding"], 0.02)
  assert_std(text["positional_embedding"], 0.01)
  assert_std(text["text_projection"], WIDTH ** -0.5)
  for name in ("positional_embedding", "proj"):
    assert_std(visual[name], WIDTH ** -0.5)
  assert_std(visual["class_embedding"], WIDTH ** -0.5, tolerance=0.15)  # Only WIDTH samples.
  # PyTorch's default conv init: uniform with bound fan_in^-0.5.
  assert_std(visual["conv1"]["kernel"], (3 * PATCH * PATCH * 3) ** -0.5)
  assert float(np.abs(visual["conv1"]["kernel"]).max()) <= (PATCH * PATCH * 3) ** -0.5
  np.testing.assert_allclose(mid_size_params["logit_scale"], math.log(1 / 0.07), rtol=1e-6)


def test_resnet(tiny_rn):
  model, variables, _, _ = tiny_rn
  visual = variables["params"]["visual"]
  features = model.config.vision.width * 2 ** (len(model.config.vision.layers) + 1)
  for name in ("q_proj", "k_proj", "v_proj", "c_proj"):
    assert_std(visual["attnpool"][name]["kernel"], features ** -0.5)
  assert_std(visual["attnpool"]["positional_embedding"], features ** -0.5)
  blocks = [value for key, value in visual.items() if key.startswith("layer")]
  assert blocks
  for block in blocks:  # Each residual branch starts at zero: the block is the identity.
    np.testing.assert_array_equal(block["bn3"]["scale"], 0.0)
    np.testing.assert_array_equal(block["bn1"]["scale"], 1.0)
  for statistics in jax.tree.leaves(variables["batch_stats"]):
    assert statistics.dtype == jnp.float32
