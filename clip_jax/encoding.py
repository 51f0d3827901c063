"""Encoding images and texts for inference: a model's encoders on every device of a mesh, fed
numpy batches. Evaluation and the tools (embed, search, classify, filter_shards) share it, so it
depends on neither.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import numpy as np

from clip_jax import sharding

Encoder = Callable[[np.ndarray], np.ndarray]  # inputs [N, ...] -> features [N, E]
Tokenize = Callable[[Sequence[str]], np.ndarray]  # texts -> int32 [N, context_length]


def make_encoders(model, variables, mesh: jax.sharding.Mesh) -> tuple[Encoder, Encoder]:
  """Image and text encoders: numpy [b, ...] in, numpy features [b, E] out.

  As in training, the batch is split over every device of the mesh (rows padded to a multiple of
  the device count), and the parameters stay where they are. The features are replicated, so
  every process gets all of them (each process reads the whole evaluation set, see
  `input_pipeline.eval_data`). A batch size compiles once per run, not once per evaluation.
  """
  batch_sharding = sharding.batch_sharding(mesh)

  def encoder(method: str) -> Encoder:
    def encode(inputs: np.ndarray) -> np.ndarray:
      padding = [(0, -len(inputs) % mesh.devices.size)] + [(0, 0)] * (inputs.ndim - 1)
      padded = np.pad(inputs, padding)
      global_inputs = jax.make_array_from_callback(padded.shape, batch_sharding,
                                                   lambda index: padded[index])
      features = _encode(variables, global_inputs, model=model, method=method, mesh=mesh)
      return np.asarray(features)[:len(inputs)]

    return encode

  return encoder("encode_image"), encoder("encode_text")


@functools.partial(jax.jit, static_argnames=("model", "method", "mesh"))
def _encode(variables, inputs: jax.Array, *, model, method: str,
            mesh: jax.sharding.Mesh) -> jax.Array:
  features = sharding.with_mesh(model.apply, mesh)(variables, inputs, method=method)  # [b, E]
  return jax.lax.with_sharding_constraint(features, sharding.replicated(mesh))


def encode_in_batches(encode: Encoder, inputs: np.ndarray, batch_size: int) -> np.ndarray:
  """`encode` over inputs [N, ...] in batches of exactly `batch_size`, the last one zero-padded.

  One input shape means one compilation of a jitted encoder, whatever N is.
  """
  features = []
  for start in range(0, len(inputs), batch_size):
    chunk = inputs[start:start + batch_size]
    padding = [(0, batch_size - len(chunk))] + [(0, 0)] * (chunk.ndim - 1)
    features.append(np.asarray(encode(np.pad(chunk, padding)))[:len(chunk)])
  return np.concatenate(features)


def l2_normalize(features: np.ndarray) -> np.ndarray:
  """Rows [N, E] scaled to unit length: dot products become cosine similarities."""
  return features / np.linalg.norm(features, axis=-1, keepdims=True)
