"""The two-tower CLIP model: image and text embeddings compared by a learned temperature.

Parameters: `visual` (a ViT or a ModifiedResNet), `text`, the scalar `logit_scale` (the log of
the inverse temperature) and, for the sigmoid loss, the scalar `logit_bias`. Features leave the
model L2-normalised and in float32, whatever the compute dtype.

Images come in either as uint8 pixels, as the input pipeline delivers them (standardised here,
on the accelerator: a quarter of the bytes to move and no float work on the host) with the
checkpoint's own statistics (`config.preprocessing`), or as floats already standardised with
them, as open_clip's models take them.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from clip_jax.models import configs
from clip_jax.models import resnet
from clip_jax.models import text
from clip_jax.models import vision


def standardize_images(images: jax.Array, preprocessing: configs.Preprocessing) -> jax.Array:
  """uint8 pixels [..., H, W, 3] -> float32, scaled to [0, 1] and standardised per channel."""
  images = images.astype(jnp.float32) / 255.0
  return (images - jnp.asarray(preprocessing.mean)) / jnp.asarray(preprocessing.std)


def l2_normalize(features: jax.Array) -> jax.Array:
  """float32 unit vectors along the last axis (as torch's F.normalize, safe at zero)."""
  features = features.astype(jnp.float32)
  norms = jnp.linalg.norm(features, axis=-1, keepdims=True)
  return features / jnp.maximum(norms, 1e-12)


class CLIP(nn.Module):
  """`encode_image`, `encode_text`, and both with the similarity logits in `__call__`."""

  config: configs.CLIPConfig

  def setup(self):
    config = self.config
    dtype = jnp.dtype(config.dtype)
    transformer_settings = dict(activation=config.activation, dtype=dtype, scan=config.scan,
                                remat=config.remat, attention=config.attention)
    if isinstance(config.vision, configs.ModifiedResNetConfig):
      self.visual = resnet.ModifiedResNet(config.vision, config.embed_dim, dtype,
                                          config.attention)
    else:
      self.visual = vision.VisionTransformer(config.vision, config.embed_dim,
                                             **transformer_settings)
    self.text = text.TextTransformer(config.text, config.embed_dim, **transformer_settings)
    self.logit_scale = self.param(
        "logit_scale", nn.initializers.constant(config.init_logit_scale), ())
    self.logit_bias = None
    if config.init_logit_bias is not None:
      self.logit_bias = self.param(
          "logit_bias", nn.initializers.constant(config.init_logit_bias), ())

  def encode_image(self, images: jax.Array, train: bool = False, normalize: bool = True,
                   patch_dropout: float = 0.0,
                   patch_indices: jax.Array | None = None) -> jax.Array:
    """Images [B, H, W, 3] (uint8 pixels, or standardised floats) -> float32 features [B, E].

    `patch_dropout` > 0 (FLIP, a ViT only) drops that fraction of the patches at random, drawn
    from the "patch_dropout" rng stream, or keeps the patches `patch_indices` [B, keep] that the
    caller drew; see clip_jax.models.vision.
    """
    if images.dtype == jnp.uint8:
      images = standardize_images(images, self.config.preprocessing)
    if not patch_dropout and patch_indices is None:
      features = self.visual(images, train=train)
    elif isinstance(self.config.vision, configs.ModifiedResNetConfig):
      raise ValueError(f"patch_dropout={patch_dropout!r} with a ModifiedResNet image tower, which "
                       "has no patches to drop; allowed: 0 (FLIP needs a ViT).")
    else:
      features = self.visual(images, train=train, patch_dropout=patch_dropout,
                             patch_indices=patch_indices)
    features = features.astype(jnp.float32)
    return l2_normalize(features) if normalize else features

  def encode_text(self, tokens: jax.Array, normalize: bool = True) -> jax.Array:
    """Token ids [B, L] (int32) -> float32 features [B, E]."""
    features = self.text(tokens).astype(jnp.float32)
    return l2_normalize(features) if normalize else features

  def __call__(self, images: jax.Array, tokens: jax.Array, train: bool = False,
               patch_dropout: float = 0.0,
               patch_indices: jax.Array | None = None) -> dict[str, jax.Array]:
    image_features = self.encode_image(images, train=train, patch_dropout=patch_dropout,
                                       patch_indices=patch_indices)    # [B, E]
    text_features = self.encode_text(tokens)                           # [B, E]
    logits = jnp.exp(self.logit_scale) * image_features @ text_features.T  # [B, B]
    outputs = dict(image_features=image_features, text_features=text_features,
                   logit_scale=self.logit_scale)
    if self.logit_bias is not None:
      logits = logits + self.logit_bias
      outputs["logit_bias"] = self.logit_bias
    outputs["logits_per_image"] = logits
    return outputs


def create_model(name: str, **overrides) -> CLIP:
  """The named architecture (see `configs.MODELS`) with `overrides`, as an unbound Flax module."""
  return CLIP(configs.get_model_config(name, **overrides))


def init_variables(config: configs.CLIPConfig, rng: jax.Array) -> dict:
  """A freshly initialised model's variables (random weights), computed as one compiled program:
  initialising op by op, as an unjitted `init` does, takes seconds even for a tiny model."""
  size = config.vision.image_size
  return jax.jit(CLIP(config).init)(rng, jnp.zeros((1, size, size, 3), jnp.float32),
                                    jnp.zeros((1, config.text.context_length), jnp.int32))


def abstract_variables(config: configs.CLIPConfig) -> dict:
  """The shapes and dtypes of the model's variables, computing none."""
  return jax.eval_shape(lambda rng: init_variables(config, rng), jax.random.PRNGKey(0))
