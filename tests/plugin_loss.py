"""A loss defined outside clip_jax and registered as a plug-in (docs/extending.md): the
image-to-text half of CLIP's loss with a margin on the matching pair's logit. It reads the model's
outputs by name and computes on the global batch (XLA partitions it); it asks the model for a
learned logit bias, which it adds. tests/test_extending.py trains with it;
`model.plugins=("plugin_loss",)` imports this module wherever the run's config is parsed."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from clip_jax import losses

MARGIN = 0.2


def make(mesh=None, batch_axes=None, *, blockwise=False, tile_size=1024) -> losses.Loss:
  del mesh, batch_axes, blockwise, tile_size  # one global computation; no blockwise form

  def loss(outputs: dict[str, jax.Array], batch: dict[str, jax.Array]) -> jax.Array:
    del batch
    similarities = outputs["image_features"] @ outputs["text_features"].T    # [N, N]
    margins = MARGIN * jnp.eye(similarities.shape[0])
    logits = jnp.exp(outputs["logit_scale"]) * (similarities - margins) + outputs["logit_bias"]
    return -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=-1)))

  return loss


KIND = losses.register(losses.LossKind(name="image_to_text_margin", make=make,
                                       model_fields=dict(init_logit_bias=0.0)))
