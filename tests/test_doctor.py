"""clip_jax.doctor on a host without TensorFlow, as a bare accelerator host is: its report, and the
modules it and the training code need importing no TensorFlow."""

import json
import os
import subprocess
import sys

from xla_flags import xla_flags

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Absent on a bare accelerator host; clu imports TensorFlow, tensorflow_datasets too.
ABSENT = ("tensorflow", "tensorflow_datasets", "clu")


def without_tensorflow(tmp_path) -> dict[str, str]:
  """An environment in which importing any of ABSENT raises ImportError, on one CPU device."""
  stubs = tmp_path / "stubs"
  for name in ABSENT:
    (stubs / name).mkdir(parents=True)
    (stubs / name / "__init__.py").write_text(
        f"raise ImportError('{name} is not installed (a stand-in of tests/test_doctor.py)')\n")
  return {**os.environ, "PYTHONPATH": os.pathsep.join([str(stubs), REPOSITORY]),
          "XLA_FLAGS": xla_flags(1)}


def test_the_doctor_reports_this_host_without_tensorflow(tmp_path):
  report_path = tmp_path / "doctor.json"
  done = subprocess.run(
      [sys.executable, "-m", "clip_jax.doctor", f"--report={report_path}", "--train_steps=8"],
      cwd=tmp_path, env=without_tensorflow(tmp_path), capture_output=True, text=True,
      timeout=600, check=False)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  report = json.loads(report_path.read_text())
  assert report["problems"] == []
  machine = report["machine"]
  assert machine["platform"] == "cpu"
  assert [device["kind"] for device in machine["devices"]] == ["cpu"]
  assert {"python", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint"} <= set(
      machine["versions"])
  assert report["tensorflow"]["installed"] is False
  assert "tensorflow is not installed" in report["tensorflow"]["why"]
  training = report["training"]
  assert training["steps"] == 8 and training["last_loss"] < 0.9 * training["first_loss"]
  assert training["loss_fell"] is True
  assert set(report["speed"]) == {"ViT-B-32", "ViT-B-16"}
  assert all("on a CPU" in result["skipped"] for result in report["speed"].values())
  assert report["input_pipeline"] == {
      "skipped": "input_pipeline does not import (see tensorflow.why)"}
  assert json.loads(done.stdout[done.stdout.index("\n{") + 1:done.stdout.rindex("}") + 1]) == report


def test_the_training_code_imports_no_tensorflow():
  modules = ("clip_jax", "clip_jax.models", "clip_jax.train_step", "clip_jax.program",
             "clip_jax.plan", "clip_jax.throughput", "clip_jax.doctor", "benchmarks.accelerator")
  done = subprocess.run(
      [sys.executable, "-c", f"import sys\nimport {', '.join(modules)}\n"
       "import json\nprint(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))"],
      cwd=REPOSITORY, env={**os.environ, "PYTHONPATH": REPOSITORY}, capture_output=True,
      text=True, timeout=300, check=True)
  imported = set(json.loads(done.stdout.strip().splitlines()[-1]))
  assert "jax" in imported and "flax" in imported  # the check sees what was imported
  assert imported.isdisjoint(ABSENT)


LOAD_AND_ENCODE = """
import json, sys
import jax
import numpy as np
import clip_jax
from clip_jax import pretrained
from clip_jax.models import clip as clip_model

model = clip_model.create_model("tiny-vit")
pretrained.save(sys.argv[1], model.config,
                clip_model.init_variables(model.config, jax.random.PRNGKey(0)))
loaded = clip_jax.load(sys.argv[1])
size = loaded.model.config.vision.image_size
features = loaded.model.apply(loaded.variables, np.zeros((2, size, size, 3), np.uint8),
                              method=loaded.model.encode_image)
errors = {}
for name, call in (("tokenize", lambda: loaded.tokenize("a photo")),
                   ("preprocess", lambda: loaded.preprocess(np.zeros((8, 8, 3), np.uint8)))):
  try:
    call()
  except ImportError as error:
    errors[name] = str(error)
print(json.dumps({"features": list(features.shape), "errors": errors,
                  "imported": sorted({name.split(".")[0] for name in sys.modules})}))
"""


def test_clip_jax_load_runs_the_model_without_tensorflow(tmp_path):
  # A bare accelerator host: loading a converted checkpoint and encoding uint8 images need no
  # TensorFlow; preprocess and tokenize (the input pipeline's) say what they need.
  done = subprocess.run([sys.executable, "-c", LOAD_AND_ENCODE, str(tmp_path / "tiny")],
                        cwd=tmp_path, env=without_tensorflow(tmp_path), capture_output=True,
                        text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result["features"][0] == 2
  assert set(result["errors"]) == {"tokenize", "preprocess"}
  for name, message in result["errors"].items():
    assert message.startswith(f"{name} needs the input pipeline, which needs TensorFlow ("), message
    assert "tensorflow is not installed" in message
  assert set(result["imported"]).isdisjoint(ABSENT)
