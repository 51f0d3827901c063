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
  modules = ("clip_jax.models", "clip_jax.train_step", "clip_jax.program", "clip_jax.plan",
             "clip_jax.throughput", "clip_jax.doctor", "benchmarks.accelerator")
  done = subprocess.run(
      [sys.executable, "-c", f"import sys\nimport {', '.join(modules)}\n"
       "import json\nprint(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))"],
      cwd=REPOSITORY, env={**os.environ, "PYTHONPATH": REPOSITORY}, capture_output=True,
      text=True, timeout=300, check=True)
  imported = set(json.loads(done.stdout.strip().splitlines()[-1]))
  assert "jax" in imported and "flax" in imported  # the check sees what was imported
  assert imported.isdisjoint(ABSENT)
