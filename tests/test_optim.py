"""The optimiser: learning-rate schedule, weight-decay mask and clipping (its config errors are
tests/test_settings.py's)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clip_jax import optim
from clip_jax import settings

WIDTH = 8
LAYERS = 3


def optim_config(**changes) -> settings.Optim:
  return settings.Optim(**{**dict(learning_rate=1e-3, warmup_steps=10, grad_clip_norm=0.0,
                                  end_learning_rate=1e-5), **changes})


def clip_like_params() -> dict:
  """A tiny parameter tree named like the models: ViT (with scanned blocks), text, ResNet parts."""
  ones = lambda *shape: np.ones(shape, np.float32)
  dense = lambda *shape: {"kernel": ones(*shape), "bias": ones(shape[-1])}
  return {
      "visual": {
          "conv1": {"kernel": ones(4, 4, 3, WIDTH)},
          "class_embedding": ones(WIDTH),
          "positional_embedding": ones(5, WIDTH),
          "ln_pre": {"scale": ones(WIDTH), "bias": ones(WIDTH)},
          "transformer": {"resblocks_0": {
              "ln_1": {"scale": ones(WIDTH), "bias": ones(WIDTH)},
              "attn": {"in_proj": dense(WIDTH, 3 * WIDTH), "out_proj": dense(WIDTH, WIDTH)},
              "ln_2": {"scale": ones(WIDTH), "bias": ones(WIDTH)},
              "mlp": {"c_fc": dense(WIDTH, 4 * WIDTH), "c_proj": dense(4 * WIDTH, WIDTH)},
          }},
          "ln_post": {"scale": ones(WIDTH), "bias": ones(WIDTH)},
          "proj": ones(WIDTH, 4),
      },
      "text": {
          "token_embedding": {"embedding": ones(16, WIDTH)},
          "positional_embedding": ones(6, WIDTH),
          "transformer": {"resblocks": {  # scanned: a leading layer axis on every leaf
              "ln_1": {"scale": ones(LAYERS, WIDTH), "bias": ones(LAYERS, WIDTH)},
              "attn": {"in_proj": {"kernel": ones(LAYERS, WIDTH, 3 * WIDTH),
                                   "bias": ones(LAYERS, 3 * WIDTH)}},
          }},
          "ln_final": {"scale": ones(WIDTH), "bias": ones(WIDTH)},
          "text_projection": ones(WIDTH, 4),
      },
      "resnet": {
          "conv1": {"kernel": ones(3, 3, 3, WIDTH)},
          "bn1": {"scale": ones(WIDTH), "bias": ones(WIDTH)},
          "downsample": {"conv": {"kernel": ones(1, 1, WIDTH, WIDTH)},
                         "bn": {"scale": ones(WIDTH), "bias": ones(WIDTH)}},
          "attnpool": {"positional_embedding": ones(5, WIDTH), "q_proj": dense(WIDTH, WIDTH),
                       "k_proj": dense(WIDTH, WIDTH), "v_proj": dense(WIDTH, WIDTH),
                       "c_proj": dense(WIDTH, 4)},
      },
      "logit_scale": ones(),
      "logit_bias": ones(),
  }


DECAYED = {
    "visual/conv1/kernel",
    "visual/transformer/resblocks_0/attn/in_proj/kernel",
    "visual/transformer/resblocks_0/attn/out_proj/kernel",
    "visual/transformer/resblocks_0/mlp/c_fc/kernel",
    "visual/transformer/resblocks_0/mlp/c_proj/kernel",
    "visual/proj",
    "text/transformer/resblocks/attn/in_proj/kernel",
    "text/text_projection",
    "resnet/conv1/kernel",
    "resnet/downsample/conv/kernel",
    "resnet/attnpool/q_proj/kernel",
    "resnet/attnpool/k_proj/kernel",
    "resnet/attnpool/v_proj/kernel",
    "resnet/attnpool/c_proj/kernel",
}


def flatten(tree) -> dict:
  return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_schedule_warms_up_then_decays_to_the_end_value():
  _, schedule = optim.create_optimizer(optim_config(), total_steps=110)
  np.testing.assert_allclose(schedule(0), 0.0)
  np.testing.assert_allclose(schedule(5), 5e-4, rtol=1e-6)               # half-way up
  np.testing.assert_allclose(schedule(10), 1e-3, rtol=1e-6)              # peak
  np.testing.assert_allclose(schedule(60), (1e-3 + 1e-5) / 2, rtol=1e-5)  # cosine mid-point
  np.testing.assert_allclose(schedule(110), 1e-5, rtol=1e-5)
  after_warmup = np.array([schedule(step) for step in range(10, 111)])
  assert np.all(np.diff(after_warmup) <= 0)


def test_schedule_without_warmup_starts_at_the_peak():
  _, schedule = optim.create_optimizer(optim_config(warmup_steps=0), total_steps=100)
  np.testing.assert_allclose(schedule(0), 1e-3, rtol=1e-6)


def test_mask_decays_only_weight_matrices_and_kernels():
  mask = flatten(optim.weight_decay_mask(clip_like_params()))
  assert {name for name, decayed in mask.items() if decayed} == DECAYED
  assert mask["text/transformer/resblocks/ln_1/scale"] is False  # stacked: 2-D, still a gain


def test_weight_decay_spares_masked_leaves():
  """With zero gradients Adam's step is zero, so only decoupled weight decay moves a parameter."""
  optimizer, _ = optim.create_optimizer(optim_config(warmup_steps=0), total_steps=100)
  params = clip_like_params()
  updates, _ = optimizer.update(jax.tree.map(jnp.zeros_like, params), optimizer.init(params),
                                params)
  new_params = flatten(optax.apply_updates(params, updates))
  for name, value in flatten(params).items():
    expected = value * (1 - 1e-3 * 0.2) if name in DECAYED else value
    np.testing.assert_allclose(new_params[name], expected, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("gradient_norm", [0.5, 1e3])
def test_clipping_bounds_the_gradient_adam_sees(gradient_norm):
  """Adam's first moment after one step is (1 - b1) * g; with clipping at 1, g has norm <= 1."""
  params = {"kernel": np.ones((4, 4), np.float32)}
  gradients = {"kernel": np.full((4, 4), gradient_norm / 4, np.float32)}  # global norm = norm
  for clip_norm, expected_norm in [(1.0, min(gradient_norm, 1.0)), (0.0, gradient_norm)]:
    optimizer, _ = optim.create_optimizer(optim_config(grad_clip_norm=clip_norm), total_steps=100)
    _, state = optimizer.update(gradients, optimizer.init(params), params)
    first_moment = optax.tree_utils.tree_get(state, "mu")
    np.testing.assert_allclose(optax.tree.norm(first_moment), (1 - 0.9) * expected_norm,
                               rtol=1e-5, err_msg=f"grad_clip_norm={clip_norm}")
