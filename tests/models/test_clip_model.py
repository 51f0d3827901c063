"""The CLIP module on tiny models: outputs, masking, and the scan / remat / bfloat16 variants."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clip_jax import models


def stack_blocks(tree):
  """Unrolled `resblocks_{i}` -> scanned `resblocks`, with a leading layer axis on every leaf."""
  if not isinstance(tree, dict):
    return tree
  blocks = sorted((key for key in tree if key.startswith("resblocks_")),
                  key=lambda key: int(key.rsplit("_", 1)[1]))
  if blocks:
    return {"resblocks": jax.tree.map(lambda *leaves: jnp.stack(leaves),
                                      *[tree[key] for key in blocks])}
  return {key: stack_blocks(value) for key, value in tree.items()}


def unstack_blocks(tree):
  """Scanned `resblocks` -> unrolled `resblocks_{i}`."""
  if not isinstance(tree, dict):
    return tree
  if "resblocks" in tree:
    layers = jax.tree.leaves(tree["resblocks"])[0].shape[0]
    return {f"resblocks_{index}": jax.tree.map(lambda leaf: leaf[index], tree["resblocks"])
            for index in range(layers)}
  return {key: unstack_blocks(value) for key, value in tree.items()}


@pytest.fixture(params=["tiny_vit", "tiny_rn"])
def tiny_model(request):
  return request.getfixturevalue(request.param)


def test_outputs(tiny_model):
  model, variables, images, tokens = tiny_model
  outputs = jax.jit(model.apply)(variables, images, tokens)
  batch, embed_dim = images.shape[0], model.config.embed_dim
  assert set(outputs) == {"image_features", "text_features", "logit_scale", "logits_per_image"}
  for key in ("image_features", "text_features"):
    assert outputs[key].shape == (batch, embed_dim) and outputs[key].dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(outputs[key], axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(outputs["logit_scale"], math.log(1 / 0.07), rtol=1e-6)
  expected_logits = (np.exp(outputs["logit_scale"]) * np.asarray(outputs["image_features"])
                     @ np.asarray(outputs["text_features"]).T)
  assert outputs["logits_per_image"].shape == (batch, batch)
  np.testing.assert_allclose(outputs["logits_per_image"], expected_logits, rtol=1e-5, atol=1e-5)

  encode_image = jax.jit(functools.partial(model.apply, method=model.encode_image,
                                           normalize=False))
  raw_features = encode_image(variables, images)
  assert raw_features.shape == (batch, embed_dim)
  np.testing.assert_allclose(raw_features / np.linalg.norm(raw_features, axis=-1, keepdims=True),
                             outputs["image_features"], rtol=1e-5, atol=1e-6)


def test_parameter_names_mirror_openai(tiny_vit, tiny_rn):
  vit, resnet = tiny_vit[1]["params"], tiny_rn[1]["params"]
  assert set(vit) == {"visual", "text", "logit_scale"}
  assert set(vit["visual"]) == {"conv1", "class_embedding", "positional_embedding", "ln_pre",
                                "transformer", "ln_post", "proj"}
  assert set(vit["text"]) == {"token_embedding", "positional_embedding", "transformer",
                              "ln_final", "text_projection"}
  for tower in ("visual", "text"):
    assert set(vit[tower]["transformer"]) == {"resblocks_0", "resblocks_1"}
    block = vit[tower]["transformer"]["resblocks_0"]
    assert set(block) == {"ln_1", "attn", "ln_2", "mlp"}
    assert set(block["attn"]) == {"in_proj", "out_proj"}
    assert set(block["mlp"]) == {"c_fc", "c_proj"}
    width = block["ln_1"]["scale"].shape[0]
    assert block["attn"]["in_proj"]["kernel"].shape == (width, 3 * width)  # [in, q | k | v]
  assert set(resnet["visual"]) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "layer1_0",
                                   "layer2_0", "attnpool"}
  assert set(resnet["visual"]["layer2_0"]) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3",
                                               "downsample"}
  assert set(resnet["visual"]["layer2_0"]["downsample"]) == {"conv", "bn"}
  assert set(resnet["visual"]["attnpool"]) == {"positional_embedding", "q_proj", "k_proj",
                                               "v_proj", "c_proj"}


def test_logit_bias_for_the_sigmoid_loss(tiny_vit):
  _, variables, images, tokens = tiny_vit
  model = models.create_model("tiny-vit", init_logit_scale=math.log(10), init_logit_bias=-10.0)
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), images, tokens)
  assert set(abstract["params"]) == {"visual", "text", "logit_scale", "logit_bias"}
  params = {**variables["params"], "logit_scale": jnp.float32(math.log(10)),
            "logit_bias": jnp.float32(-10.0)}
  outputs = jax.jit(model.apply)({"params": params}, images, tokens)
  similarities = np.asarray(outputs["image_features"]) @ np.asarray(outputs["text_features"]).T
  np.testing.assert_allclose(outputs["logits_per_image"], 10 * similarities - 10, rtol=1e-5)
  assert float(outputs["logit_bias"]) == -10.0


def test_text_features_are_read_at_the_end_of_text_token(tiny_vit):
  model, variables, _, tokens = tiny_vit
  encode_text = jax.jit(functools.partial(model.apply, method=model.encode_text))
  features = encode_text(variables, tokens)
  other_ids = jax.random.randint(jax.random.PRNGKey(3), tokens.shape, 1, 500)
  positions = jnp.arange(tokens.shape[1])
  end_of_text = tokens.argmax(axis=-1)[:, None]
  after_end = jnp.where(positions > end_of_text, other_ids, tokens)
  np.testing.assert_allclose(encode_text(variables, after_end), features, atol=1e-6)
  # Shorter sequences (fewer positional embeddings) give the same features.
  np.testing.assert_allclose(encode_text(variables, tokens[:, :int(end_of_text.max()) + 1]),
                             features, atol=1e-6)
  first = jnp.where(positions == 0, other_ids, tokens)
  assert not np.allclose(encode_text(variables, first), features, atol=1e-4)


def loss_and_gradients(model, params, images, tokens):
  def loss(params):
    logits = model.apply({"params": params}, images, tokens)["logits_per_image"]
    return -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits)))
  return jax.jit(jax.value_and_grad(loss))(params)


@pytest.fixture(scope="module", params=["tiny_vit", "tiny_siglip"])
def unrolled(request):
  """A tiny model with transformer towers (CLIP's ViT, SigLIP's) and its unrolled loss and
  gradients."""
  model, variables, images, tokens = request.getfixturevalue(request.param)
  return model, variables, images, tokens, loss_and_gradients(model, variables["params"], images,
                                                              tokens)


@pytest.mark.parametrize("scan, remat", [(True, False), (False, True), (True, True)])
def test_scan_and_remat_compute_the_same_function(unrolled, scan, remat):
  model, variables, images, tokens, (expected_loss, expected_gradients) = unrolled

  variant = models.CLIP(dataclasses.replace(model.config, scan=scan, remat=remat))
  params = stack_blocks(variables["params"]) if scan else variables["params"]
  abstract = jax.eval_shape(variant.init, jax.random.PRNGKey(0), images, tokens)["params"]
  assert (jax.tree.map(lambda leaf: leaf.shape, params)
          == jax.tree.map(lambda leaf: leaf.shape, abstract))
  loss, gradients = loss_and_gradients(variant, params, images, tokens)
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
  if scan:
    jax.tree.map(np.testing.assert_array_equal, stack_blocks(unstack_blocks(gradients)),
                 gradients)
    gradients = unstack_blocks(gradients)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-3, atol=1e-6),
               gradients, expected_gradients)


def test_bfloat16_compute_keeps_float32_parameters_and_outputs(tiny_model):
  model, variables, images, tokens = tiny_model
  variant = models.CLIP(dataclasses.replace(model.config, dtype="bfloat16"))
  abstract = jax.eval_shape(variant.init, jax.random.PRNGKey(0), images, tokens)
  assert {leaf.dtype for leaf in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.float32)}
  expected = jax.jit(model.apply)(variables, images, tokens)
  outputs = jax.jit(variant.apply)(variables, images, tokens)
  for key in ("image_features", "text_features", "logits_per_image"):
    assert outputs[key].dtype == jnp.float32
  for key in ("image_features", "text_features"):
    cosines = np.sum(np.asarray(outputs[key]) * np.asarray(expected[key]), axis=-1)
    assert np.all(cosines > 0.99), (key, cosines)


def test_uint8_pixels_are_standardised_with_clip_statistics(tiny_model):
  model, variables, images, _ = tiny_model
  pixels = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
  # The reference: torchvision's ToTensor + Normalize with OpenAI's constants, in float64.
  mean = np.array([0.48145466, 0.4578275, 0.40821073])
  std = np.array([0.26862954, 0.26130258, 0.27577711])
  standardised = ((pixels / 255.0 - mean) / std).astype(np.float32)
  encode_image = jax.jit(functools.partial(model.apply, method=model.encode_image))
  np.testing.assert_allclose(encode_image(variables, pixels),
                             encode_image(variables, standardised), rtol=1e-5, atol=1e-5)


def _gradient_temporaries(scan: bool, dtype: str, batch: int = 32) -> int:
  """Bytes of temporaries XLA:CPU plans for the gradient of tiny-vit's features."""
  model = models.create_model("tiny-vit", scan=scan, dtype=dtype)
  size, length = model.config.vision.image_size, model.config.text.context_length
  images = jnp.zeros((batch, size, size, 3), jnp.uint8)
  tokens = jnp.zeros((batch, length), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), images, tokens)["params"]

  def features_sum(params):
    outputs = model.apply({"params": params}, images, tokens)
    return jnp.sum(outputs["image_features"]) + jnp.sum(outputs["text_features"])

  compiled = jax.jit(jax.grad(features_sum)).lower(params).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_scanned_blocks_without_remat_keep_no_more_than_unrolled_ones():
  # A scan stacks every residual its body saves; without the block's checkpoint policy it kept
  # float32 statistics and the activation's parts too: 1.5x the unrolled blocks' temporaries.
  assert _gradient_temporaries(True, "bfloat16") <= 1.1 * _gradient_temporaries(False, "bfloat16")
