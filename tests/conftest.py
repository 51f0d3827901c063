"""Runs every test on 8 virtual CPU devices, so that sharding is exercised on one machine, with one
XLA compilation cache for the whole run."""
import os
import pathlib
import shutil
import tempfile

import pytest

from xla_flags import xla_flags

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", xla_flags(8))
# The CPU backend only: libtpu (the test extra, for the TPU compiles of tests/test_plan.py, which
# need no TPU backend) would otherwise start in every process and subprocess, to find no TPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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


# The suite's longest files, longest first (summed test times per file of the fresh-clone runs
# in benchmarks/RESULTS.md's suite table; the files after these take well under two minutes).
LONGEST_FILES = ("test_train.py", "test_plan.py", "test_multiprocess.py", "convert/test_convert.py",
                 "test_colabs.py", "test_docs_training.py")


def pytest_collection_modifyitems(config, items):
  """Starts the longest files first, the rest in their usual order. `make test` runs pytest-xdist
  with `--dist loadfile --no-loadscope-reorder`, which hands out whole files in this order as
  its two workers free up; its default order (most tests first) left the longest files, which
  have few tests, to the end, and one worker alone with them (simulated on the measured run's
  durations: the suite 1,342 s against 1,437 s)."""
  rank = {name: position for position, name in enumerate(LONGEST_FILES)}
  tests = pathlib.Path(__file__).parent
  items.sort(key=lambda item: rank.get(item.path.relative_to(tests).as_posix(), len(rank)))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """A random tiny open_clip model, written as open_clip publishes it, converted: the model of
  the pretrained tools' tests (tests/test_embed.py, tests/test_filter_shards.py)."""
  # pylint: disable=g-import-not-at-top: the library is imported once XLA_FLAGS is set above.
  import doc_commands
  from clip_jax import convert
  from clip_jax import pretrained
  workspace = str(tmp_path_factory.mktemp("checkpoint"))
  doc_commands.add_stand_ins(workspace, "open_clip_model.safetensors")
  imported = convert.import_weights(os.path.join(workspace, "open_clip_model.safetensors"))
  pretrained.save(os.path.join(workspace, "converted"), imported.config, imported.variables,
                  imported.source)
  return os.path.join(workspace, "converted")
