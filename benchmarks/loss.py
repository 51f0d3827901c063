"""Memory and time of the contrastive loss and its gradients, blockwise against plain, as the
global batch grows.

  python -m benchmarks.loss --batch_sizes=4096,16384,65536 --width=512
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.loss --devices=8

Memory is what XLA allocates for the compiled loss + gradient beyond its arguments and outputs
(`memory_analysis().temp_size_in_bytes`: the embeddings themselves and their gradients are not
counted). A configuration whose plan exceeds `--memory_limit_gib` is compiled but not run, and
recorded as not fitting. Time is one execution after compilation.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from clip_jax import losses
from clip_jax import sharding

GIB = 2.0**30


def features(batch_size: int, width: int, mesh) -> tuple[jax.Array, jax.Array]:
  """Random unit [N, D] image and text features, the batch split over the mesh."""
  def unit(key):
    vectors = jax.random.normal(key, (batch_size, width), jnp.float32)
    return vectors / jnp.linalg.norm(vectors, axis=-1, keepdims=True)

  make = jax.jit(lambda key: tuple(map(unit, jax.random.split(key))),
                 out_shardings=sharding.batch_sharding(mesh))
  return make(jax.random.PRNGKey(0))


def measure(loss_name: str, blockwise: bool, tile_size: int, batch_size: int, width: int, mesh,
            memory_limit_gib: float) -> dict:
  """{"temp_gib", "seconds" (None when not run), "loss"} of one configuration."""
  loss_fn = losses.make_loss_fn(loss_name, mesh, sharding.BATCH_AXES, blockwise=blockwise,
                                tile_size=tile_size)
  step = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2, 3)))
  images, texts = features(batch_size, width, mesh)
  scalars = (jnp.float32(np.log(1 / 0.07)), jnp.float32(-10.0))
  compiled = step.lower(images, texts, *scalars).compile()
  temp_gib = compiled.memory_analysis().temp_size_in_bytes / GIB
  if temp_gib > memory_limit_gib:
    return {"temp_gib": temp_gib, "seconds": None, "loss": None}
  start = time.perf_counter()
  loss, gradients = compiled(images, texts, *scalars)
  jax.block_until_ready(gradients)
  return {"temp_gib": temp_gib, "seconds": time.perf_counter() - start, "loss": float(loss)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch_sizes", default="4096,16384,65536")
  parser.add_argument("--width", type=int, default=512)
  parser.add_argument("--losses", default="softmax", help="softmax, sigmoid or both.")
  parser.add_argument("--tile_size", type=int, default=1024)
  parser.add_argument("--devices", type=int, default=1,
                      help="Devices to split the batch over (on a CPU, as many as XLA_FLAGS "
                      "makes).")
  parser.add_argument("--memory_limit_gib", type=float, default=16.0,
                      help="Configurations that would need more are compiled but not run.")
  parser.add_argument("--no_record", action="store_true", help="Do not append to RESULTS.md.")
  args = parser.parse_args()
  if args.devices > jax.device_count():
    parser.error(f"--devices={args.devices}, but jax sees {jax.device_count()}; on a CPU set "
                 f"XLA_FLAGS=--xla_force_host_platform_device_count={args.devices}.")
  mesh = sharding.create_mesh(devices=jax.devices()[:args.devices])

  header = ["loss", "global batch", "devices", "plain GiB", "blockwise GiB", "plain s",
            "blockwise s", "blockwise / plain time", "relative loss difference"]
  rows = []
  for loss_name in args.losses.split(","):
    for batch_size in map(int, args.batch_sizes.split(",")):
      plain, blockwise = (measure(loss_name, flag, args.tile_size, batch_size, args.width, mesh,
                                  args.memory_limit_gib) for flag in (False, True))
      both_ran = plain["seconds"] is not None and blockwise["seconds"] is not None
      rows.append([
          loss_name, f"{batch_size:,}", args.devices, f"{plain['temp_gib']:.3f}",
          f"{blockwise['temp_gib']:.3f}",
          f"{plain['seconds']:.2f}" if plain["seconds"] is not None else
          f"not run: needs {plain['temp_gib']:.1f} GiB",
          f"{blockwise['seconds']:.2f}" if blockwise["seconds"] is not None else "not run",
          f"{blockwise['seconds'] / plain['seconds']:.2f}x" if both_ran else "-",
          f"{abs(blockwise['loss'] - plain['loss']) / abs(plain['loss']):.1e}" if both_ran else
          "-"])
      print(common.format_table(header, rows[-1:]), flush=True)
  common.report(
      "Contrastive loss memory and time", header, rows,
      f"Loss + gradients with respect to both embeddings [N, {args.width}] (float32), the "
      f"temperature and the bias, on {args.devices} device(s) of this machine. GiB = XLA's "
      "temporary buffers for the compiled computation (the embeddings, their gradients and the "
      f"outputs excluded); blockwise tiles of {args.tile_size}. Plans above "
      f"{args.memory_limit_gib:g} GiB are not run.", record=not args.no_record)


if __name__ == "__main__":
  main()
