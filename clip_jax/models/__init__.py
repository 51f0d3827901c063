"""CLIP models in Flax: `create_model(name, **overrides)` and the table of architectures."""

from clip_jax.models.clip import CLIP
from clip_jax.models.clip import abstract_variables
from clip_jax.models.clip import create_model
from clip_jax.models.clip import init_variables
from clip_jax.models.configs import CLIPConfig
from clip_jax.models.configs import TextConfig
from clip_jax.models.configs import get_model_config
from clip_jax.models.configs import list_models
from clip_jax.models.resnet import ModifiedResNetConfig
from clip_jax.models.vision import VisionTransformerConfig

__all__ = ["CLIP", "CLIPConfig", "ModifiedResNetConfig", "TextConfig", "VisionTransformerConfig",
           "abstract_variables", "create_model", "get_model_config", "init_variables",
           "list_models"]
