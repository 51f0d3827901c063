"""TensorFlow as this project uses it: a host-side data library that never touches the accelerators.

JAX owns the GPUs and TPUs. TensorFlow, imported for tf.data, TFDS and TensorBoard summaries,
would otherwise claim every GPU it finds at its first op and map their free memory beside JAX's
preallocation, in every process: with one process per GPU (SLURM), every process's TensorFlow
touches all of them. Hiding the accelerators from it before its first op is what big_vision and
JAX's data-loading guide do. Every module of the project that needs TensorFlow gets it here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from types import ModuleType

from absl import logging

ACCELERATOR_KINDS = ("GPU", "TPU")


@contextlib.contextmanager
def _native_stderr_silenced():
  """Discards what native code writes to file descriptor 2 inside the block.

  TensorFlow's import and its first look at the devices print start-up lines from C++ ("oneDNN
  custom operations are on", "Could not find cuda drivers", "failed call to cuInit ... (303)" on
  every machine without a GPU) through absl before absl's logging is initialised, which ignores
  TF_CPP_MIN_LOG_LEVEL (tensorflow/tensorflow#100442): a new user reads them as errors. The
  `tensorflow` distribution is the one tensorflow-text requires, so its CPU-only build, which
  prints none of them, cannot be the dependency. TF_CPP_MIN_LOG_LEVEL=0 keeps them.
  """
  if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, "w") as devnull:
      os.dup2(devnull.fileno(), 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def hide_accelerators(tf: ModuleType) -> None:
  """Makes TensorFlow see the host's CPUs only. Must run before its first op: afterwards it can
  no longer change its devices, and says so in a warning."""
  for kind in ACCELERATOR_KINDS:
    try:
      tf.config.set_visible_devices([], kind)
    except RuntimeError as error:  # TensorFlow ran an op already, with its accelerators.
      logging.warning("TensorFlow already started on its %s devices and may hold memory that JAX "
                      "needs (%s): import input_pipeline or clip_jax.host_tensorflow before "
                      "running TensorFlow ops.", kind, error)


@functools.cache
def import_tensorflow() -> ModuleType:
  """The `tensorflow` module, imported quietly and with the accelerators hidden from it."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  with _native_stderr_silenced():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices()  # Their first enumeration prints the cuInit line.
  hide_accelerators(tf)
  return tf
