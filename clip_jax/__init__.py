"""clip_jax: CLIP (Radford et al. 2021) in JAX and Flax.

The public API; training, evaluation and conversion are programs (`python -m clip_jax.train`).
"""

from clip_jax.models import create_model
from clip_jax.models import list_models

__all__ = ["create_model", "list_models"]
