"""The Colab notebooks run top to bottom in a fresh kernel with their defaults, so they never rot.

Each notebook reads its settings from environment variables (see its "settings" cell). The tests
set only two kinds: fewer training steps, smaller batches and evaluations, so that training takes
seconds, both in colabs/train.ipynb and for the demo model that colabs/zero_shot.ipynb trains
itself by default; and workdirs in a temporary directory, so that a run writes nothing into the
checkout and always starts afresh. colabs/zero_shot.ipynb also runs on a converted checkpoint
(tiny, random weights), and once on a missing one for its message; colabs/scaling.ipynb runs as
it is. The kernel is the Python running the tests (the repository's .venv under `make test`),
whatever kernels Jupyter has registered elsewhere; it inherits the environment but for the
devices: one CPU device, as on Colab's CPU runtime (sharding is the other tests' business).
"""

import json
import os
import pathlib
import sys

# nbclient, nbformat and ipykernel (and scikit-image, for the notebook's photos) come with the
# `test` extra: the notebooks are part of what `make test` checks, not an optional extra.
from jupyter_client import kernelspec
from jupyter_client import manager
import nbclient
import nbformat
import pytest

from xla_flags import xla_flags

COLABS = pathlib.Path(__file__).resolve().parent.parent / "colabs"
KERNEL_NAME = "clip_jax_tests"
CELL_TIMEOUT_S = 300
TRAIN_STEPS = 6
TRAIN_SETTINGS = dict(CLIP_JAX_TRAIN_STEPS=str(TRAIN_STEPS), CLIP_JAX_BATCH_SIZE="16",
                      CLIP_JAX_EVAL_EVERY_STEPS=str(TRAIN_STEPS), CLIP_JAX_EVAL_IMAGES="32")


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
  """A kernel spec that starts ipykernel with this very interpreter."""
  directory = tmp_path_factory.mktemp("kernels")
  (directory / KERNEL_NAME).mkdir()
  spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
          "display_name": "clip_jax tests", "language": "python"}
  (directory / KERNEL_NAME / "kernel.json").write_text(json.dumps(spec))
  return str(directory)


def read_notebook(name):
  notebook = nbformat.read(COLABS / name, as_version=4)
  nbformat.validate(notebook)
  return notebook


def execute(notebook, kernel_dir, settings, name):
  """Runs every cell in a fresh kernel started in colabs/ (as a local Jupyter would), with the
  environment variables `settings`; any cell's error fails the test with its traceback.

  With CLIP_JAX_EXECUTED_NOTEBOOKS=<dir> set, the executed notebook (outputs and per-cell timing)
  is also written there as `name`, to look at.
  """
  kernel_manager = manager.KernelManager(
      kernel_name=KERNEL_NAME,
      kernel_spec_manager=kernelspec.KernelSpecManager(kernel_dirs=[kernel_dir]))
  client = nbclient.NotebookClient(
      notebook, km=kernel_manager, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT_S,
      resources={"metadata": {"path": str(COLABS)}})
  try:
    client.execute(env={**os.environ, "XLA_FLAGS": xla_flags(1), **settings})
  finally:
    # nbclient shuts down only kernels it started itself; this one would idle on (gigabytes of
    # memory and a share of a core) until the test run ends.
    if kernel_manager.has_kernel:
      kernel_manager.shutdown_kernel(now=True)
    if os.environ.get("CLIP_JAX_EXECUTED_NOTEBOOKS"):
      os.makedirs(os.environ["CLIP_JAX_EXECUTED_NOTEBOOKS"], exist_ok=True)
      nbformat.write(notebook, os.path.join(os.environ["CLIP_JAX_EXECUTED_NOTEBOOKS"], name))
  return notebook


def tagged(notebook, tag):
  cells = [cell for cell in notebook.cells if tag in cell.metadata.get("tags", [])]
  assert len(cells) == 1, f"one cell tagged {tag!r} expected, found {len(cells)}"
  return cells[0]


def text_of(cell):
  return "".join(output.get("text", "") for output in cell.outputs
                 if output.output_type == "stream")


def images_of(cell):
  return [output for output in cell.outputs
          if output.output_type in ("display_data", "execute_result")
          and "image/png" in output.get("data", {})]


@pytest.mark.parametrize("name", ["train.ipynb", "zero_shot.ipynb", "scaling.ipynb"])
def test_notebooks_are_committed_clean(name):
  """Valid nbformat 4, no outputs or execution counts, a setup cell with the REPOSITORY form
  field for Colab, a settings cell for the tests to drive."""
  notebook = read_notebook(name)
  assert notebook.nbformat == 4
  for cell in notebook.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, cell.source[:80]
  assert 'REPOSITORY = "https://github.com/<org>/clip_jax"  # @param' in tagged(notebook,
                                                                              "setup").source
  assert "os.environ.get" in tagged(notebook, "settings").source


@pytest.fixture(scope="module")
def trained(kernel_dir, tmp_path_factory):
  """colabs/train.ipynb, executed: (the notebook with its outputs, its workdir)."""
  workdir = tmp_path_factory.mktemp("colab_train") / "workdir"
  notebook = execute(read_notebook("train.ipynb"), kernel_dir,
                     {**TRAIN_SETTINGS, "CLIP_JAX_WORKDIR": str(workdir)}, "train.ipynb")
  return notebook, workdir


def test_train_notebook(trained):
  notebook, workdir = trained
  assert f"step {TRAIN_STEPS}/{TRAIN_STEPS}" in text_of(tagged(notebook, "train"))
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert records[-1]["step"] == TRAIN_STEPS
  assert any("zero_shot/shape_top1_seen" in record for record in records)
  assert (workdir / "training_curves.png").stat().st_size > 0
  assert len(images_of(tagged(notebook, "curves"))) == 2  # the PNG written, the lr/temperature plot
  assert "zero-shot top-1 on new images" in text_of(tagged(notebook, "zero-shot"))
  prompts = tagged(notebook, "prompts")
  assert "get their own caption" in text_of(prompts) and images_of(prompts)


def test_zero_shot_notebook_with_its_defaults(kernel_dir, tmp_path):
  """No checkpoint given: the notebook trains its demo model of the synthetic shapes and uses it."""
  workdir = tmp_path / "zero_shot_demo"
  notebook = execute(read_notebook("zero_shot.ipynb"), kernel_dir,
                     {"CLIP_JAX_WORKDIR": str(workdir), **TRAIN_SETTINGS},
                     "zero_shot.ipynb")
  demo = text_of(tagged(notebook, "demo"))
  assert f"step {TRAIN_STEPS}/{TRAIN_STEPS}" in demo and "zero-shot top-1 on new images" in demo
  assert str(workdir) in text_of(tagged(notebook, "load"))
  assert "A model of the synthetic shapes" in text_of(tagged(notebook, "load"))
  predictions = text_of(tagged(notebook, "classify"))
  for name in ("astronaut", "chelsea", "coffee", "rocket", "synthetic 0"):
    assert f"{name}: 'a picture of a" in predictions
  assert images_of(tagged(notebook, "images"))
  assert images_of(tagged(notebook, "similarity"))
  retrieval = tagged(notebook, "retrieval")
  assert "Query: 'a red star'" in text_of(retrieval) and images_of(retrieval)


@pytest.fixture(scope="module")
def converted_checkpoint(tmp_path_factory):
  """A checkpoint as `python -m clip_jax.convert` writes it, without a download: tiny-vit with
  CLIP's vocabulary and random weights (drawn in numpy: initialising costs seconds, this not)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from clip_jax import models  # pylint: disable=g-import-not-at-top
  from clip_jax import pretrained  # pylint: disable=g-import-not-at-top
  config = models.get_model_config("tiny-vit", text=dict(vocab_size=49_408))
  images = np.zeros((1, config.vision.image_size, config.vision.image_size, 3), np.float32)
  tokens = np.zeros((1, config.text.context_length), np.int32)
  shapes = jax.eval_shape(models.CLIP(config).init, jax.random.PRNGKey(0), images, tokens)
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda leaf: rng.normal(0.0, 0.02, leaf.shape).astype(leaf.dtype),
                           shapes)
  directory = tmp_path_factory.mktemp("converted") / "tiny-vit"
  pretrained.save(str(directory), config, variables, {"format": "random init, for the tests"})
  return directory


def test_zero_shot_notebook_on_a_converted_checkpoint(converted_checkpoint, kernel_dir):
  notebook = execute(read_notebook("zero_shot.ipynb"), kernel_dir,
                     {"CLIP_JAX_CHECKPOINT": str(converted_checkpoint)},
                     "zero_shot_converted.ipynb")
  assert "Prompts and query for photographs" in text_of(tagged(notebook, "load"))
  predictions = text_of(tagged(notebook, "classify"))
  for name in ("astronaut", "chelsea", "coffee", "rocket"):
    assert f"{name}: 'a photo of" in predictions
  assert "synthetic" not in predictions
  assert images_of(tagged(notebook, "similarity"))
  retrieval = tagged(notebook, "retrieval")
  assert "Query: 'a cat'" in text_of(retrieval) and images_of(retrieval)


def test_zero_shot_notebook_says_how_to_get_a_checkpoint(kernel_dir, tmp_path):
  """Without a checkpoint the notebook stops at once, saying how to convert or train one."""
  notebook = read_notebook("zero_shot.ipynb")
  notebook.cells = [tagged(notebook, tag) for tag in ("setup", "settings", "check-checkpoint")]
  with pytest.raises(nbclient.exceptions.CellExecutionError) as error:
    execute(notebook, kernel_dir, {"CLIP_JAX_CHECKPOINT": str(tmp_path / "missing")},
            "zero_shot_without_checkpoint.ipynb")
  message = str(error.value)
  assert "No checkpoint at" in message and "python -m clip_jax.convert" in message
  assert "colabs/train.ipynb" in message


def test_scaling_notebook_on_the_committed_sweep(kernel_dir):
  """colabs/scaling.ipynb with its defaults: the small reproduction's table in benchmarks/."""
  table = COLABS.parent / "benchmarks" / "scaling" / "synthetic" / "scaling_table.json"
  runs = {row["run"] for row in json.loads(table.read_text())}
  notebook = execute(read_notebook("scaling.ipynb"), kernel_dir, {}, "scaling.ipynb")
  assert f"evaluations of {len(runs)} runs" in text_of(tagged(notebook, "table"))
  fits = text_of(tagged(notebook, "fits"))
  assert "error vs compute (plain" in fits and "compute-optimal model" in fits
  assert len(images_of(tagged(notebook, "plots"))) == 2  # The error's laws and the loss's.
