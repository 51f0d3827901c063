"""The text tower: a transformer over token ids, read out at one token and projected.

CLIP's (OpenAI's `encode_text`) is causal and reads the end-of-text token, found as the largest
token id of each sequence (the last id of CLIP's BPE vocabulary): the causal mask lets that token
see the whole caption while padding after it changes nothing. SigLIP's is bidirectional and reads
the last position, with a bias on its projection: its captions are padded (or cut) to the
context length, so the last token is always a pad token that has attended to the whole caption.
`configs.TextConfig` chooses.
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
  norm_epsilon: float = 1e-5

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
                           self.activation, causal=config.causal, dtype=self.dtype,
                           scan=self.scan, remat=self.remat, attention=self.attention,
                           norm_epsilon=self.norm_epsilon, name="transformer")(x)  # [B, L, W]
    if config.pool == "last":
      x = x[:, -1]                                                     # [B, W]
    else:
      x = x[jnp.arange(x.shape[0]), tokens.argmax(axis=-1)]            # [B, W]
    # Per token: the same as before the gather.
    x = layers.LayerNorm(epsilon=self.norm_epsilon, name="ln_final")(x)
    text_projection = self.param("text_projection", layers.normal(width ** -0.5),
                                 (width, self.embed_dim))
    x = x @ text_projection.astype(self.dtype)                         # [B, E]
    if config.projection_bias:
      x = x + self.param("text_projection_bias", nn.initializers.zeros,
                         (self.embed_dim,)).astype(self.dtype)
    return x
