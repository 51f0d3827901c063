"""LiT-style locking and fine-tuning: which parameters train, that locked ones do not move under
the optimiser, and the check of the checkpoint to start from (the settings' own errors are
tests/test_settings.py's)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clip_jax import finetune
from clip_jax import optim
from clip_jax import pretrained
from clip_jax import settings
from clip_jax.models import clip as clip_model
from clip_jax.models import configs


def init_params(name, **overrides):
  config = configs.get_model_config(name, **overrides)
  return config, clip_model.init_variables(config, jax.random.PRNGKey(0))["params"]


def trainable_names(labels):
  return {jax.tree_util.keystr(path, simple=True, separator="/")
          for path, trains in jax.tree_util.tree_leaves_with_path(labels) if trains}


def test_locked_image_tower_with_its_last_block_unlocked():
  config, params = init_params("tiny-vit", vision=dict(layers=3))
  given = settings.Finetune(lock_image=True, image_unlocked_blocks=1)
  names = trainable_names(finetune.trainable(params, given))
  visual = {name for name in names if name.startswith("visual/")}
  assert visual and all(name.startswith(("visual/transformer/resblocks_2/", "visual/ln_post/",
                                         "visual/proj")) for name in visual)
  assert "visual/proj" in visual and "visual/conv1/kernel" not in names
  assert "text/token_embedding/embedding" in names and "logit_scale" in names


def test_fully_locked_resnet_and_text_train_only_the_temperature():
  config, params = init_params("tiny-rn")
  given = settings.Finetune(lock_image=True, lock_text=True)
  assert trainable_names(finetune.trainable(params, given)) == {"logit_scale"}
  assert not finetune.image_tower_trains(given)


def test_locked_parameters_do_not_move():
  config, params = init_params("tiny-vit")
  given = settings.Finetune(lock_image=True)
  labels = finetune.trainable(params, given)
  optimizer, _ = optim.create_optimizer(settings.Optim(warmup_steps=0), 10)
  optimizer = finetune.lock(optimizer, given)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  new_params = optax.apply_updates(params, updates)
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), new_params, params)
  assert jax.tree.leaves(moved) == jax.tree.leaves(labels)  # moved exactly where trainable


def test_a_checkpoint_that_is_not_a_converted_one_is_refused(tmp_path):
  config, _ = init_params("tiny-vit")
  with pytest.raises(ValueError, match=r"finetune\.checkpoint='.*' is not a converted checkpoint; "
                                       r"allowed: a directory written by"):
    finetune.check_source(settings.Finetune(checkpoint=str(tmp_path)), config)
  finetune.check_source(settings.Finetune(), config)  # Nothing to check from scratch.


@pytest.mark.parametrize("saved_changes, message", [
    (dict(activation="gelu"), r"heads and activation"),
    (dict(text=dict(layers=3)), r"sizes"),
])
def test_a_checkpoint_of_another_function_is_refused(tmp_path, saved_changes, message):
  """The weights must compute the function they were trained as: same sizes, heads, activation."""
  config = configs.get_model_config("tiny-vit", activation="quick_gelu")
  saved = configs.get_model_config("tiny-vit", **{"activation": "quick_gelu", **saved_changes})
  (tmp_path / pretrained.MODEL_FILE).write_text(
      json.dumps({"model": configs.config_to_dict(saved)}))
  given = settings.Finetune(checkpoint=str(tmp_path))
  with pytest.raises(ValueError, match=message):
    finetune.check_source(given, config)
  (tmp_path / pretrained.MODEL_FILE).write_text(
      json.dumps({"model": configs.config_to_dict(config)}))
  finetune.check_source(given, config)
