"""The table of architectures: open_clip's parameter counts, overrides and config errors."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from clip_jax import models

# Millions of parameters (total, image tower, text tower) as open_clip's profiler reports them:
# `visual`, `text` and the whole model, whose total alone includes the logit scale.
OPEN_CLIP_PARAMETERS = {
    "RN50": (102.01, 38.32, 63.69),
    "RN101": (119.69, 56.26, 63.43),
    "RN50x4": (178.30, 87.14, 91.16),
    "RN50x16": (290.98, 167.33, 123.65),
    "RN50x64": (623.26, 420.38, 202.88),
    "ViT-B-32": (151.28, 87.85, 63.43),
    "ViT-B-16": (149.62, 86.19, 63.43),
    "ViT-L-14": (427.62, 303.97, 123.65),
    "ViT-L-14-336": (427.94, 304.29, 123.65),
    "ViT-H-14": (986.11, 632.08, 354.03),
    "ViT-g-14": (1366.68, 1012.65, 354.03),
    "ViT-bigG-14": (2539.57, 1844.91, 694.66),
}


def millions(tree) -> float:
  return round(sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree)) / 1e6, 2)


@pytest.mark.parametrize("name", sorted(OPEN_CLIP_PARAMETERS))
def test_parameter_counts_match_open_clip(name):
  # Scanned, to trace one block per tower; the scan tests show the unrolled tree holds the same.
  model = models.create_model(name, scan=True)
  size = model.config.vision.image_size
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  tokens = jax.ShapeDtypeStruct((1, model.config.text.context_length), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), images, tokens)["params"]
  assert set(params) == {"visual", "text", "logit_scale"}
  counts = (millions(params), millions(params["visual"]), millions(params["text"]))
  assert counts == OPEN_CLIP_PARAMETERS[name]


def test_openai_models_use_quick_gelu_and_laion_models_gelu():
  for name in OPEN_CLIP_PARAMETERS:
    expected = "gelu" if name in ("ViT-H-14", "ViT-g-14", "ViT-bigG-14") else "quick_gelu"
    assert models.get_model_config(name).activation == expected, name


def test_list_models_names_the_whole_table():
  names = models.list_models()
  assert set(OPEN_CLIP_PARAMETERS) <= set(names)
  assert {"tiny-vit", "tiny-rn"} <= set(names)


def test_overrides_merge_into_the_tower_records():
  config = models.get_model_config("tiny-vit", embed_dim=16, dtype="bfloat16",
                                   vision=dict(width=128), text=dict(layers=3))
  base = models.get_model_config("tiny-vit")
  assert (config.embed_dim, config.dtype) == (16, "bfloat16")
  assert (config.vision.width, config.vision.patch_size) == (128, base.vision.patch_size)
  assert (config.text.layers, config.text.width) == (3, base.text.width)


def test_overrides_from_an_ml_collections_config():
  overrides = ml_collections.ConfigDict(dict(
      embed_dim=16, vision=dict(layers=[1, 2]), text=dict(context_length=8)))
  config = models.get_model_config("tiny-rn", **overrides)
  assert config.vision.layers == (1, 2)  # Lists become tuples: the record stays hashable.
  assert hash(config)
  assert config.text.context_length == 8


@pytest.mark.parametrize("name, overrides, fragments", [
    ("ViT-Z-99", {}, ["model.name='ViT-Z-99'", "RN50", "ViT-bigG-14", "tiny-vit"]),
    ("tiny-vit", dict(widht=3), ["widht=3", "embed_dim", "init_logit_bias"]),
    ("tiny-rn", dict(vision=dict(patch_size=8)), ["vision.patch_size=8", "layers"]),
    ("tiny-vit", dict(text=dict(heads=4)), ["text.heads=4", "head_width"]),
    ("tiny-vit", dict(dtype="float16"), ["dtype='float16'", "float32", "bfloat16"]),
    ("tiny-vit", dict(activation="relu"), ["activation='relu'", "quick_gelu", "gelu"]),
    ("tiny-vit", dict(attention="flash"), ["attention='flash'", "auto, xla, cudnn, splash"]),
    ("tiny-vit", dict(attention="cudnn"), ["attention='cudnn'", "dtype='float32'", "bfloat16"]),
    ("tiny-vit", dict(vision=dict(patch_size=5)), ["vision.patch_size=5", "image_size=32"]),
    ("tiny-vit", dict(text=dict(head_width=48)), ["text.head_width=48", "64"]),
    ("tiny-rn", dict(vision=dict(image_size=36)), ["vision.image_size=36", "multiples of 8"]),
])
def test_config_errors_name_the_key_the_value_and_what_is_allowed(name, overrides, fragments):
  with pytest.raises(ValueError) as error:
    models.get_model_config(name, **overrides)
  for fragment in fragments:
    assert fragment in str(error.value)
