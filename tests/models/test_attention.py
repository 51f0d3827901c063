"""The attention kernels: the Pallas splash kernel (in interpret mode on this CPU) against XLA's
attention, what "auto" chooses where, and the kernel's shard_map over a sharded batch."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from clip_jax import sharding
from clip_jax import settings
from clip_jax.models import attention
from clip_jax.models import layers
from clip_jax.models import resnet

BATCH, WIDTH, HEADS = 2, 16, 2
# The text tower's causal attention (16 tokens, as tiny models' captions), the image tower's over
# 1 + 16 patches (tiny-vit), FLIP's 1 + 8 left by mask_ratio 0.5, and the ResNet's attention pool
# (one query, the mean, over 1 + 4 x 4 positions).
CASES = {
    "causal-text-16": (lambda impl: layers.MultiHeadAttention(HEADS, 0.3, True, attention=impl),
                       (BATCH, 16, WIDTH)),
    "image-17": (lambda impl: layers.MultiHeadAttention(HEADS, 0.3, False, attention=impl),
                 (BATCH, 17, WIDTH)),
    "flip-image-1+8": (lambda impl: layers.MultiHeadAttention(HEADS, 0.3, False, attention=impl),
                       (BATCH, 9, WIDTH)),
    "attention-pool-1-of-17": (lambda impl: resnet.AttentionPool2d(4, HEADS, 8, attention=impl),
                               (BATCH, 4, 4, WIDTH)),
}


def _outputs_and_gradients(module: nn.Module, inputs: jax.Array):
  """The module's outputs and the gradients of <outputs, cotangent> w.r.t. inputs and params."""
  params = module.init(jax.random.PRNGKey(1), inputs)["params"]
  outputs, pullback = jax.vjp(lambda x, p: module.apply({"params": p}, x), inputs, params)
  cotangent = jax.random.normal(jax.random.PRNGKey(2), outputs.shape)
  grad_inputs, grad_params = pullback(cotangent)
  return {"outputs": outputs, "inputs": grad_inputs, **{
      "/".join(str(key.key) for key in path): leaf
      for path, leaf in jax.tree_util.tree_leaves_with_path(grad_params)}}


@pytest.mark.parametrize("case", list(CASES))
def test_the_splash_kernel_equals_xla_attention_in_values_and_gradients(case):
  """float32 throughout; tolerance 1e-5 (absolute and relative): the kernel's online softmax
  sums in another order than XLA's, which moves values by a few float32 ulps (~1e-6 seen)."""
  make_module, shape = CASES[case]
  inputs = jax.random.normal(jax.random.PRNGKey(0), shape)
  run = lambda impl: jax.jit(functools.partial(_outputs_and_gradients, make_module(impl)))(inputs)
  expected, actual = run("xla"), run("splash")
  assert actual.keys() == expected.keys() and len(expected) > 4  # outputs, inputs, params
  for name, value in expected.items():
    # A zero gradient would compare trivially; a key bias's is zero (softmax ignores a shift).
    assert name == "k_proj/bias" or np.abs(value).max() > 1e-3, name
    np.testing.assert_allclose(actual[name], value, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("platform, device_kind, dtype, keys, expected", [
    ("tpu", "TPU v5 lite", jnp.bfloat16, 257, "splash"),  # ViT-L/14
    ("tpu", "TPU v4", jnp.float32, 256, "splash"),
    ("tpu", "TPU v5", jnp.bfloat16, 197, "xla"),  # ViT-B/16: the padded copies cost more
    ("tpu", "TPU v5", jnp.bfloat16, 77, "xla"),  # the text tower: one block, mostly padding
    ("tpu", "TPU v5", jnp.bfloat16, 50, "xla"),  # ViT-B/32, the ResNets' attention pools
    ("gpu", "NVIDIA H100 80GB HBM3", jnp.bfloat16, 77, "cudnn"),
    ("gpu", "NVIDIA H100 80GB HBM3", jnp.float32, 197, "xla"),  # cuDNN's kernel: half only
    ("gpu", "AMD Instinct MI300X", jnp.bfloat16, 197, "xla"),
    ("cpu", "cpu", jnp.bfloat16, 577, "xla"),
])
def test_auto_chooses_by_platform_dtype_and_length(platform, device_kind, dtype, keys, expected):
  assert attention.resolve("auto", platform, device_kind, dtype, keys) == expected
  assert attention.resolve("xla", platform, device_kind, dtype, keys) == "xla"


def test_the_default_is_auto_which_is_xla_on_this_cpu():
  assert settings.parse(settings.default_config()).model.architecture.attention == "auto"
  module = layers.MultiHeadAttention(HEADS, 0.3)
  inputs = jnp.zeros((BATCH, 256, WIDTH))
  params = jax.eval_shape(module.init, jax.random.PRNGKey(0), inputs)
  jaxpr = str(jax.make_jaxpr(module.apply)(params, inputs))
  assert "pallas_call" not in jaxpr and "dot_general" in jaxpr


def test_the_kernel_runs_on_each_devices_shard_of_a_sharded_batch():
  """Under a mesh of 8 devices, each runs the kernel on its 2 of the 16 examples: the compiled
  program gathers nothing (XLA would gather the batch around a Pallas call it cannot split)."""
  mesh = jax.make_mesh((4, 2), sharding.MESH_AXES,
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  module = layers.MultiHeadAttention(HEADS, 0.3, causal=True, attention="splash")
  inputs = jax.random.normal(jax.random.PRNGKey(0), (16, 9, WIDTH))
  params = module.init(jax.random.PRNGKey(1), inputs[:1])
  apply = jax.jit(sharding.with_mesh(module.apply, mesh),
                  in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
                  out_shardings=sharding.batch_sharding(mesh))
  sharded = jax.device_put(inputs, NamedSharding(mesh, PartitionSpec(sharding.BATCH_AXES)))
  compiled = apply.lower(params, sharded).compile()
  text = compiled.as_text()
  assert "all-gather" not in text and "all-to-all" not in text and "collective-permute" not in text
  expected = jax.jit(layers.MultiHeadAttention(HEADS, 0.3, causal=True, attention="xla").apply)(
      params, inputs)
  np.testing.assert_allclose(compiled(params, sharded), expected, rtol=1e-5, atol=1e-5)
