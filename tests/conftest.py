"""Runs every test on 8 virtual CPU devices, so that sharding is exercised on one machine, with one
XLA compilation cache for the whole run."""
import os
import shutil
import tempfile

from xla_flags import xla_flags

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", xla_flags(8))
# The CPU backend only: libtpu (the test extra, for the TPU compiles of tests/test_plan.py, which
# need no TPU backend) would otherwise start in every process and subprocess, to find no TPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tf.data only; keep TensorFlow off accelerators.


def pytest_configure(config):
  """A persistent compilation cache shared by the run's test processes and every process they
  start: the suite compiles the same tiny programs many times over, in-process and in the
  documentation's commands (measured: tests/test_train.py 20% faster). It is new for each run
  (set here, in the process that starts pytest-xdist's workers, which inherit it), so that a run
  takes as long as on a clean machine."""
  if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return
  config.compilation_cache = tempfile.mkdtemp(prefix="clip_jax_tests_xla_cache.")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = config.compilation_cache
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


def pytest_unconfigure(config):
  if getattr(config, "compilation_cache", None):
    shutil.rmtree(config.compilation_cache, ignore_errors=True)
