"""CLIP's ModifiedResNet image tower (RN50, RN101, RN50x4, RN50x16, RN50x64).

Three changes to a torchvision ResNet, as OpenAI made them: a three-convolution stem with an
average pool instead of a max pool; anti-aliased downsampling (an average pool before the stride-1
convolution instead of a strided one); and a final attention pool, whose only query is the mean
of the feature map, instead of global average pooling.

BatchNorm keeps its running statistics in the `batch_stats` collection. In training it normalises
with statistics of the whole batch: under jit with a batch sharded over devices, XLA reduces them
across devices, so the result does not depend on how the batch is split.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from clip_jax.models import attention as attention_lib
from clip_jax.models import costs
from clip_jax.models import layers
from clip_jax.models import towers

EXPANSION = 4  # A Bottleneck outputs 4 times as many channels as it computes with.


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModifiedResNetConfig:
  image_size: int
  layers: tuple[int, ...]  # Bottleneck blocks per stage; each stage after the first halves H, W.
  width: int  # Stem width; stage i has width * 2**i planes and outputs 4 times as many channels.
  head_width: int = 64  # Of the attention pool.


def _conv(features: int, kernel: int, dtype: layers.Dtype, name: str, **kwargs) -> nn.Conv:
  # Explicit symmetric padding (PyTorch's `padding=1`); "SAME" pads strided convolutions on one
  # side only, which would shift the pretrained stem.
  return nn.Conv(features, (kernel, kernel), padding=kernel // 2, use_bias=False, dtype=dtype,
                 kernel_init=layers.TORCH_DEFAULT_INIT, name=name, **kwargs)


def _batch_norm(train: bool, dtype: layers.Dtype, name: str, **kwargs) -> nn.BatchNorm:
  # PyTorch's momentum 0.1 is the weight of the new batch; Flax's momentum that of the old value.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      name=name, **kwargs)


def _avg_pool(x: jax.Array, stride: int) -> jax.Array:
  return nn.avg_pool(x, (stride, stride), strides=(stride, stride)) if stride > 1 else x


class Downsample(nn.Module):
  """The shortcut of a block that changes shape: average pool, then 1x1 conv and BatchNorm."""

  features: int
  stride: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:  # [B, H, W, C]
    x = _conv(self.features, 1, self.dtype, "conv")(_avg_pool(x, self.stride))
    return _batch_norm(train, self.dtype, "bn")(x)             # [B, H/s, W/s, features]


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3, (average pool when strided), 1x1 expand; plus the shortcut.

  The last BatchNorm's scale starts at zero, so every block starts as the identity.
  """

  planes: int
  stride: int = 1
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:  # [B, H, W, C]
    features = self.planes * EXPANSION
    out = _conv(self.planes, 1, self.dtype, "conv1")(x)
    out = nn.relu(_batch_norm(train, self.dtype, "bn1")(out))
    out = _conv(self.planes, 3, self.dtype, "conv2")(out)
    out = nn.relu(_batch_norm(train, self.dtype, "bn2")(out))  # [B, H, W, planes]
    out = _conv(features, 1, self.dtype, "conv3")(_avg_pool(out, self.stride))
    out = _batch_norm(train, self.dtype, "bn3", scale_init=nn.initializers.zeros)(out)
    if self.stride > 1 or x.shape[-1] != features:
      x = Downsample(features, self.stride, self.dtype, name="downsample")(x, train)
    return nn.relu(out + x)                                     # [B, H/s, W/s, 4 planes]


class AttentionPool2d(nn.Module):
  """Multi-head attention of the mean token over itself and every position of the feature map."""

  grid_size: int
  heads: int
  out_features: int
  dtype: layers.Dtype = jnp.float32
  attention: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:                 # [B, G, G, C]
    batch, channels = x.shape[0], x.shape[-1]
    x = x.reshape(batch, -1, channels)                           # [B, G*G, C]
    x = jnp.concatenate([x.mean(axis=1, keepdims=True), x], axis=1)  # [B, 1 + G*G, C]
    std = channels ** -0.5
    positional_embedding = self.param("positional_embedding", layers.normal(std),
                                      (1 + self.grid_size ** 2, channels))
    x = x + positional_embedding.astype(self.dtype)
    dense = lambda features, name: layers.Dense(features, layers.normal(std), self.dtype,
                                                name=name)
    split_heads = lambda t: t.reshape(batch, -1, self.heads, channels // self.heads)
    query = dense(channels, "q_proj")(x[:, :1])                  # [B, 1, C]
    key = dense(channels, "k_proj")(x)                           # [B, 1 + G*G, C]
    value = dense(channels, "v_proj")(x)                         # [B, 1 + G*G, C]
    x = attention_lib.attention(split_heads(query), split_heads(key), split_heads(value),
                                implementation=self.attention)   # [B, 1, heads, C / heads]
    return dense(self.out_features, "c_proj")(x.reshape(batch, channels))  # [B, E]


class ModifiedResNet(nn.Module):
  """Images [B, H, W, 3] -> unnormalised image embeddings [B, embed_dim]."""

  config: ModifiedResNetConfig
  embed_dim: int
  dtype: layers.Dtype = jnp.float32
  attention: str = "auto"

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    config = self.config
    x = images.astype(self.dtype)
    stem = [(config.width // 2, 2), (config.width // 2, 1), (config.width, 1)]
    for index, (features, stride) in enumerate(stem, start=1):
      x = _conv(features, 3, self.dtype, f"conv{index}", strides=stride)(x)
      x = nn.relu(_batch_norm(train, self.dtype, f"bn{index}")(x))
    x = _avg_pool(x, 2)                                          # [B, H/4, W/4, width]
    for stage, blocks in enumerate(config.layers):
      for index in range(blocks):
        stride = 2 if stage > 0 and index == 0 else 1
        x = Bottleneck(config.width * 2 ** stage, stride, self.dtype,
                       name=f"layer{stage + 1}_{index}")(x, train)
    # [B, G, G, C] with G = H / 2**(stages + 1) and C = width * 2**(stages + 1).
    return AttentionPool2d(config.image_size // 2 ** (len(config.layers) + 1),
                           x.shape[-1] // config.head_width, self.embed_dim, self.dtype,
                           self.attention, name="attnpool")(x)


def check(config: ModifiedResNetConfig, prefix: str) -> None:
  stride = 2 ** (len(config.layers) + 1)
  if config.image_size % stride:
    raise ValueError(f"{prefix}vision.image_size={config.image_size}; allowed: multiples of "
                     f"{stride} (the ResNet's total stride).")
  pool_width = config.width * stride  # into the attention pool
  if pool_width % config.head_width:
    raise ValueError(f"{prefix}vision.head_width={config.head_width} does not divide the width "
                     f"{pool_width}; allowed: its divisors.")


def _conv_cost(size: int, kernel: int, features_in: int, features_out: int,
               input_is_data: bool = False) -> costs.Cost:
  """A convolution with a `size` x `size` output."""
  return costs.matmul(2 * size * size * kernel * kernel * features_in * features_out,
                      input_is_data)


def flops(config: ModifiedResNetConfig, embed_dim: int, mask_ratio: float = 0.0,
          remat: bool = False) -> costs.Cost:
  """The stem's three 3x3 convolutions, the bottlenecks (1x1, 3x3, pool, 1x1; a pooled 1x1
  shortcut where the shape changes), and the attention pool (one query: the mean token). No
  patches to drop, no remat."""
  del mask_ratio, remat
  half, width = config.width // 2, config.width
  size = config.image_size // 2
  cost = (_conv_cost(size, 3, 3, half, input_is_data=True) + _conv_cost(size, 3, half, half)
          + _conv_cost(size, 3, half, width))
  size //= 2
  channels = width
  for stage, blocks in enumerate(config.layers):
    planes = width * 2 ** stage
    for index in range(blocks):
      stride = 2 if stage > 0 and index == 0 else 1
      out_size, features = size // stride, EXPANSION * planes
      cost += (_conv_cost(size, 1, channels, planes) + _conv_cost(size, 3, planes, planes)
               + _conv_cost(out_size, 1, planes, features))
      if stride > 1 or channels != features:
        cost += _conv_cost(out_size, 1, channels, features)
      size, channels = out_size, features
  tokens = 1 + size * size
  attention_pool = (2 * channels * channels  # q_proj, of the mean token only
                    + 2 * 2 * tokens * channels * channels  # k_proj, v_proj
                    + 2 * 2 * tokens * channels  # logits and weighted sum of the one query
                    + 2 * channels * embed_dim)  # c_proj
  return cost + costs.matmul(attention_pool)


TOWER = towers.register(towers.ImageTower(
    kind="modified_resnet", config=ModifiedResNetConfig,
    build=lambda config, embed_dim, settings: ModifiedResNet(
        config, embed_dim, dtype=settings.dtype, attention=settings.attention),
    check=check, blocks=lambda config: sum(config.layers), flops=flops,
    # The attention pool's positions: its mean token, then the last stage's grid.
    positions=lambda config: towers.Grid(("attnpool", "positional_embedding"), 1,
                                         config.image_size // 2 ** (len(config.layers) + 1))))
