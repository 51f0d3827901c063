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

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from clip_jax import image_preparation
from clip_jax.models import configs
from clip_jax.models import text
from clip_jax.models import towers
from clip_jax.models import vision


def standardize_images(images: jax.Array,
                       preprocessing: image_preparation.Preprocessing) -> jax.Array:
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
    settings = towers.TowerSettings(activation=config.activation, dtype=dtype, scan=config.scan,
                                    remat=config.remat, attention=config.attention,
                                    norm_epsilon=config.norm_epsilon)
    self.visual = towers.of(config.vision).build(config.vision, config.embed_dim, settings)
    self.text = text.TextTransformer(config.text, config.embed_dim,
                                     **dataclasses.asdict(settings))
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

    `patch_dropout` > 0 (FLIP, a tower with patches such as a ViT) drops that fraction of each
    image's patches at random, drawn from the "patch_dropout" rng stream, or keeps the patches
    `patch_indices` [B, keep] that the caller drew (the train step does, for the whole batch, so
    that gradient accumulation's micro-batches keep the patches the whole batch would). Dropping
    is a call argument, not part of the architecture: a training schedule (a masked phase, then an
    unmasked one) that evaluation never asks for.
    """
    if images.dtype == jnp.uint8:
      images = standardize_images(images, self.config.preprocessing)
    if not patch_dropout and patch_indices is None:
      features = self.visual(images, train=train)
    elif (num_patches := towers.of(self.config.vision).patches) is None:
      raise ValueError(f"patch_dropout={patch_dropout!r} with a "
                       f"{towers.describe(self.config.vision)} image tower, which has no patches "
                       "to drop; allowed: 0 (FLIP needs a tower with patches, such as a ViT).")
    else:
      if patch_indices is None:
        patch_indices = vision.kept_patch_indices(
            self.make_rng("patch_dropout"), images.shape[0], num_patches(self.config.vision),
            patch_dropout)
      features = self.visual(images, train=train, patch_indices=patch_indices)
    features = features.astype(jnp.float32)
    return l2_normalize(features) if normalize else features

  def encode_text(self, tokens: jax.Array, normalize: bool = True) -> jax.Array:
    """Token ids [B, L] (int32) -> float32 features [B, E]."""
    features = self.text(tokens).astype(jnp.float32)
    return l2_normalize(features) if normalize else features

  def outputs(self, images: jax.Array, tokens: jax.Array, train: bool = False,
              patch_dropout: float = 0.0,
              patch_indices: jax.Array | None = None) -> dict[str, jax.Array]:
    """What a loss reads, by name: each example's outputs, batch first (`image_features`,
    `text_features` [B, E]), and the ones shared by all examples, scalars (`logit_scale`, and
    `logit_bias` where the model has one)."""
    outputs = dict(
        image_features=self.encode_image(images, train=train, patch_dropout=patch_dropout,
                                         patch_indices=patch_indices),
        text_features=self.encode_text(tokens), logit_scale=self.logit_scale)
    if self.logit_bias is not None:
      outputs["logit_bias"] = self.logit_bias
    return outputs

  def __call__(self, images: jax.Array, tokens: jax.Array, train: bool = False,
               patch_dropout: float = 0.0,
               patch_indices: jax.Array | None = None) -> dict[str, jax.Array]:
    """`outputs`, and the similarity logits of every image with every text [B, B]."""
    outputs = self.outputs(images, tokens, train=train, patch_dropout=patch_dropout,
                           patch_indices=patch_indices)
    logits = jnp.exp(self.logit_scale) * outputs["image_features"] @ outputs["text_features"].T
    if self.logit_bias is not None:
      logits = logits + self.logit_bias
    return {**outputs, "logits_per_image": logits}


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
