"""The analytic FLOP count against XLA's cost analysis of the compiled computations.

XLA counts every operation, elementwise ones too, so its count is a little higher than the
matmul-and-convolution count of scaling laws: the tolerance is 5%, for towers wide enough (256)
that matmuls dominate, as they do in every real CLIP.
"""

import jax
import jax.numpy as jnp
import optax
import pytest

from clip_jax import flip
from clip_jax import flops
from clip_jax import models
from clip_jax import settings

TOLERANCE = 0.05
BATCH = 8
VIT = dict(embed_dim=128, vision=dict(image_size=64, patch_size=8, width=256, layers=3),
           text=dict(width=256, layers=3))
RESNET = dict(embed_dim=128, vision=dict(image_size=64, width=32, layers=(1, 2, 1)),
              text=dict(width=256, layers=3))


def xla_flops(function, *args) -> float:
  cost = jax.jit(function).lower(*args).compile().cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]


def model_and_inputs(name, overrides):
  """The model, and its variables and inputs as shapes: XLA counts the FLOPs of a program from its
  shapes, so nothing needs initialising (an eager init of these models takes seconds)."""
  config = models.get_model_config(name, **overrides)
  model = models.CLIP(config)
  size = config.vision.image_size
  images = jax.ShapeDtypeStruct((BATCH, size, size, 3), jnp.float32)
  tokens = jax.ShapeDtypeStruct((BATCH, config.text.context_length), jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images, tokens)
  return config, model, variables, images, tokens


def contrastive_gradient(model, mask_ratio):
  """The gradient of the symmetric softmax loss with respect to every parameter."""
  def loss(params, variables, images, tokens):
    logits = model.apply({**variables, "params": params}, images, tokens,
                         patch_dropout=mask_ratio,
                         rngs={"patch_dropout": jax.random.PRNGKey(1)})["logits_per_image"]
    labels = jnp.arange(logits.shape[0])
    return (optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            + optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()) / 2
  return jax.grad(loss)


@pytest.mark.parametrize("name,overrides,mask_ratio", [
    ("tiny-vit", VIT, 0.0),
    ("tiny-vit", VIT, 0.5),  # FLIP: the image tower sees half the patches.
    ("tiny-vit", dict(VIT, remat=True), 0.0),  # Counted with hardware=True.
    ("tiny-rn", RESNET, 0.0),
])
def test_training_flops_match_xla(name, overrides, mask_ratio):
  config, model, variables, images, tokens = model_and_inputs(name, overrides)
  counted = BATCH * flops.train_flops_per_sample(config, BATCH, mask_ratio,
                                                 hardware=True)["total"].total
  compiled = xla_flops(contrastive_gradient(model, mask_ratio), variables["params"], variables,
                       images, tokens)
  assert counted == pytest.approx(compiled, rel=TOLERANCE)


@pytest.mark.parametrize("name,overrides", [("tiny-vit", VIT), ("tiny-rn", RESNET)])
def test_forward_flops_match_xla(name, overrides):
  config, model, variables, images, tokens = model_and_inputs(name, overrides)
  counted = BATCH * flops.train_flops_per_sample(config, BATCH)["total"].forward
  compiled = xla_flops(lambda v, i, t: model.apply(v, i, t)["logits_per_image"],
                       variables, images, tokens)
  assert counted == pytest.approx(compiled, rel=TOLERANCE)
  inference = flops.inference_flops_per_sample(config)
  assert BATCH * (inference["image"] + inference["text"]) == pytest.approx(compiled,
                                                                          rel=TOLERANCE)


def test_remat_is_hardware_compute_only():
  config = models.get_model_config("tiny-vit", **dict(VIT, remat=True))
  plain = models.get_model_config("tiny-vit", **VIT)
  model_flops = flops.train_flops_per_sample(config, BATCH)["total"]
  assert model_flops == flops.train_flops_per_sample(plain, BATCH)["total"]
  hardware = flops.train_flops_per_sample(config, BATCH, hardware=True)["total"]
  assert hardware.forward == model_flops.forward
  assert hardware.backward > model_flops.backward


def test_accumulation_recomputes_the_towers_forward_passes_only():
  """GradCache runs each tower forward twice (features without gradients, then again for the
  backward pass); the loss runs once, on the whole batch; the model's FLOPs do not change."""
  config = models.get_model_config("tiny-vit", **VIT)
  plain = flops.train_flops_per_sample(config, BATCH, hardware=True)
  accumulated = flops.train_flops_per_sample(config, BATCH, hardware=True, accumulated=True)
  assert accumulated["total"].total - plain["total"].total == pytest.approx(
      plain["image"].forward + plain["text"].forward)
  assert accumulated["loss"] == plain["loss"]
  assert (flops.train_flops_per_sample(config, BATCH, accumulated=True)["total"]
          == flops.train_flops_per_sample(config, BATCH)["total"])


def test_named_models_match_open_clips_profile():
  """open_clip's model profile lists 4.41 GFLOPs for ViT-B/32's image tower and 81.08 for
  ViT-L/14's, counting a multiply-accumulate as one FLOP (fvcore's convention): twice that here."""
  for name, multiply_accumulates in (("ViT-B-32", 4.41e9), ("ViT-L-14", 81.08e9)):
    forward = flops.inference_flops_per_sample(models.get_model_config(name))["image"]
    assert forward == pytest.approx(2 * multiply_accumulates, rel=0.01)


def test_cumulative_flops_follow_the_flip_schedule():
  config = models.get_model_config("tiny-vit", **VIT)
  masking = settings.Flip(mask_ratio=0.75, unmasked_steps=3)
  total_steps = 10
  per_step = {ratio: BATCH * flops.train_flops_per_sample(config, BATCH, ratio)["total"].total
              for ratio in (0.0, 0.75)}
  for step in (1, 7, 8, 10):
    expected = sum(per_step[flip.mask_ratio_at(s, masking, total_steps)]
                   for s in range(1, step + 1))
    assert flops.cumulative_train_flops(config, BATCH, step, masking,
                                        total_steps) == pytest.approx(expected)
  assert per_step[0.75] < 0.6 * per_step[0.0]


def test_parameter_count_matches_the_initialised_model():
  config = models.get_model_config("tiny-vit", **VIT)
  variables = models.init_variables(config, jax.random.PRNGKey(0))
  count = flops.parameter_count(config)
  sizes = lambda tree: sum(leaf.size for leaf in jax.tree.leaves(tree))
  assert count["total"] == sizes(variables["params"])
  assert count["image"] == sizes(variables["params"]["visual"])
  assert count["text"] == sizes(variables["params"]["text"])
