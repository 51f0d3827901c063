"""CLIP's text tower: a causal transformer read out at the end-of-text token.

As OpenAI's `encode_text`: the features are those of the end-of-text token, found as the largest
token id of each sequence (it is the last id of CLIP's BPE vocabulary). The causal mask lets that
token see the whole caption while padding after it changes nothing.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from clip_jax.models import configs
from clip_jax.models import layers


class TextTransformer(nn.Module):
  """Token ids [B, L] (L <= context_length) -> unnormalised text embeddings [B, embed_dim]."""

  config: configs.TextConfig
  embed_dim: int
  activation: str = "gelu"
  dtype: layers.Dtype = jnp.float32
  scan: bool = False
  remat: bool = False
  attention: str = "auto"

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    config = self.config
    width = config.width
    x = nn.Embed(config.vocab_size, width, dtype=self.dtype, embedding_init=layers.normal(0.02),
                 name="token_embedding")(tokens)                       # [B, L, W]
    positional_embedding = self.param("positional_embedding", layers.normal(0.01),
                                      (config.context_length, width))
    x = x + positional_embedding[:tokens.shape[1]].astype(self.dtype)
    x = layers.Transformer(width, config.layers, config.head_width, config.mlp_dim,
                           self.activation, causal=True, dtype=self.dtype, scan=self.scan,
                           remat=self.remat, attention=self.attention,
                           name="transformer")(x)                      # [B, L, W]
    end_of_text = x[jnp.arange(x.shape[0]), tokens.argmax(axis=-1)]    # [B, W]
    x = layers.LayerNorm(name="ln_final")(end_of_text)  # Per token: the same as before the gather.
    text_projection = self.param("text_projection", layers.normal(width ** -0.5),
                                 (width, self.embed_dim))
    return x @ text_projection.astype(self.dtype)                      # [B, E]
