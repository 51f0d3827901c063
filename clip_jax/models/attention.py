"""Scaled dot-product attention with a choice of kernel: the one attention of every tower.

`model.overrides.attention` picks the implementation:

* "xla": `jax.nn.dot_product_attention`'s XLA path, which materialises the [B, H, L, L] logits
  (and keeps them for the backward pass).
* "cudnn": cuDNN's fused (flash) attention through `jax.nn.dot_product_attention`; NVIDIA GPUs,
  bfloat16 compute only.
* "splash": the Pallas TPU splash-attention kernel (jax.experimental.pallas.ops.tpu), which never
  holds more than one [block, block] tile of logits. Off TPUs it runs in Pallas's interpret mode:
  the same kernel, emulated, for tests on CPU (slow).
* "auto": `resolve` below, by platform, dtype and sequence length.

The platform is that of the context mesh (`jax.sharding.get_abstract_mesh()`, which
clip_jax.sharding's `with_mesh` sets for the train step) or else of the default backend, so that
a train step compiled here for a TPU topology (clip_jax.plan) gets the TPU kernel.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu import splash_attention
from jax.sharding import PartitionSpec

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash")
# The splash kernel's tile edge: TPU vector registers are 128 lanes wide, and the kernel needs
# sequence lengths that are multiples of its blocks.
BLOCK = 128
SPLASH_MIN_KEYS = 256  # "auto" on TPUs: the kernel from this many keys on (`resolve`).


def _platform() -> tuple[str, str]:
  """(platform, device kind) of the devices this code is traced for."""
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty and mesh.abstract_device is not None:
    return mesh.abstract_device.platform, mesh.abstract_device.device_kind
  device = jax.devices()[0]
  return device.platform, device.device_kind


def resolve(implementation: str, platform: str, device_kind: str, dtype, key_length: int) -> str:
  """The implementation "auto" stands for (any other name stands for itself).

  * TPU: "splash" from `SPLASH_MIN_KEYS` keys on (ViT-L/14's 257 and 577 tokens), "xla" below
    (CLIP's 77 text tokens, ViT-B/32's 50, ViT-B/16's 197, the ResNets' attention pools). The
    kernel pads to multiples of 128 and keeps its padded query, key, value and output for the
    backward pass, where XLA keeps the [L, L] probabilities per head: the padded copies cost more
    until L approaches 256. Compiled for v5p by benchmarks.memory_plan, ViT-B/16 needed more
    memory with the kernel, ViT-L/14 less, and ViT-L/14 at 336 px far less.
  * NVIDIA GPUs in bfloat16 or float16: "cudnn", which has no block padding to pay for.
  * Otherwise (CPU; float32 on GPUs, which cuDNN's fused kernel does not take): "xla".
  """
  if implementation != "auto":
    return implementation
  if platform == "tpu":
    return "splash" if key_length >= SPLASH_MIN_KEYS else "xla"
  half = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
  if platform == "gpu" and device_kind.startswith("NVIDIA") and half:
    return "cudnn"
  return "xla"


def _padded(length: int) -> int:
  return -(-length // BLOCK) * BLOCK


def _splash_one_shard(query, key, value, *, causal: bool, interpret: bool) -> jax.Array:
  """The splash kernel over a batch [b, Lq, H, D] x [b, Lk, H, D] on one device.

  Sequences are zero-padded to multiples of 128; a static mask hides the padded keys (and, for
  `causal`, the keys after each query), so the padded queries' rows, cut off afterwards, still
  see at least one key. The mask is per block: the kernel skips the blocks it hides entirely.
  """
  (query_length, heads, head_width), key_length = query.shape[1:], key.shape[1]
  query_padded, key_padded = _padded(query_length), _padded(key_length)
  visible = np.arange(key_padded)[None, :] < key_length                    # [1, Lk']
  if causal:
    visible = visible & (np.arange(key_padded)[None, :] <= np.arange(query_padded)[:, None])
  visible = np.broadcast_to(visible, (query_padded, key_padded))           # [Lq', Lk']
  mask = splash_attention.MultiHeadMask([splash_attention.NumpyMask(visible)] * heads)
  kernel = splash_attention.make_splash_mha(mask, head_shards=1, q_seq_shards=1,
                                            interpret=interpret)
  pad = lambda t, length: jnp.pad(t, ((0, 0), (0, length - t.shape[1]), (0, 0), (0, 0)))
  to_heads_first = lambda t: t.transpose(0, 2, 1, 3)                       # [b, H, L, D]
  query = to_heads_first(pad(query * head_width ** -0.5, query_padded))     # the kernel's q.k
  key, value = (to_heads_first(pad(t, key_padded)) for t in (key, value))
  outputs = jax.vmap(kernel)(query, key, value)                            # [b, H, Lq', D]
  return outputs.transpose(0, 2, 1, 3)[:, :query_length]                   # [b, Lq, H, D]


def _splash(query, key, value, *, causal: bool, platform: str) -> jax.Array:
  """The splash kernel on every device's own part of the batch.

  XLA does not partition a Pallas call: given a batch sharded over the context mesh, it would
  gather the whole batch onto every device. So the kernel runs in `shard_map` over the mesh's
  axes, all of which split the batch (clip_jax.sharding's convention), each device on its shard.
  """
  run = lambda *arrays: _splash_one_shard(*arrays, causal=causal, interpret=platform != "tpu")
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or query.shape[0] % mesh.size:  # No mesh, or a batch it cannot split evenly
    return run(query, key, value)               # (the train step makes none): the whole batch.
  batch_split = PartitionSpec(mesh.axis_names)
  # check_vma=False: the splash kernel's pallas_call declares its outputs with no mesh axes.
  return jax.shard_map(run, mesh=mesh, in_specs=(batch_split,) * 3, out_specs=batch_split,
                       check_vma=False)(query, key, value)


def attention(query: jax.Array, key: jax.Array, value: jax.Array, *, causal: bool = False,
              implementation: str = "auto") -> jax.Array:
  """softmax(q k^T / sqrt(D)) v per head: [B, Lq, H, D], [B, Lk, H, D] x 2 -> [B, Lq, H, D].

  Logits and softmax in float32 whatever the inputs' dtype (every implementation); `causal`
  lets query i see keys 0..i only.
  """
  platform, device_kind = _platform()
  implementation = resolve(implementation, platform, device_kind, query.dtype, key.shape[1])
  if implementation == "splash":
    return _splash(query, key, value, causal=causal, platform=platform)
  if implementation in ("xla", "cudnn"):
    return jax.nn.dot_product_attention(query, key, value, is_causal=causal,
                                        implementation=implementation)
  raise ValueError(f"model.overrides.attention={implementation!r}; allowed: "
                   f"{', '.join(IMPLEMENTATIONS)}.")
