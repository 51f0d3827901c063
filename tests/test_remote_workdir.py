"""A gs:// workdir, end to end, against a Google Cloud Storage emulator on localhost (no network;
tests/gcs_emulator.py): training writes its config, metrics, TensorBoard events, checkpoints and
plot into the bucket and resumes from it, and evaluation reads it back (through
pretrained.read_workdir, as `clip_jax.load` does); a sweep's and a scaling analysis's files land
there too.

Everything clip_jax writes goes through etils.epath (clip_jax.files), Orbax's arrays through
TensorStore. In production epath serves gs:// with TensorFlow's GCS file system, whose address
cannot be changed; here EPATH_USE_TF=false hands gs:// to gcsfs, which, like TensorStore, can be
pointed at the emulator. What the run wrote is read back with gcsfs directly, not through
clip_jax.
"""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

# Plain gcsfs, without its lookups of a bucket's type or of Compute Engine credentials (each waits
# for a server that is not there); read when gcsfs is imported.
EMULATOR_CLIENT = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "NO_GCE_CHECK": "true"}
os.environ.update(EMULATOR_CLIENT)
import gcsfs  # pylint: disable=g-import-not-at-top,wrong-import-position

import command_server
import tiny_runs
from xla_flags import xla_flags

BUCKET = "clip-runs"
# The tiny run, 4 steps logged every 2 (its first start stops at 2: a step of warm-up).
TINY_FLAGS = ("--config.total_steps=4", "--config.log_every_steps=2",
              "--config.optim.warmup_steps=1")


@pytest.fixture(scope="module")
def emulator():
  """The emulator's URL, and the environment that sends every gs:// access of a child there."""
  url = f"http://localhost:{tiny_runs.free_port()}"
  server = subprocess.Popen(
      [sys.executable, os.path.join(os.path.dirname(__file__), "gcs_emulator.py"),
       url.rsplit(":", 1)[1], BUCKET], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 60
  while True:
    try:
      socket.create_connection(("localhost", int(url.rsplit(":", 1)[1])), timeout=1).close()
      break
    except OSError:
      if time.time() > deadline or server.poll() is not None:
        server.kill()
        pytest.fail("The GCS emulator did not start.")
      time.sleep(0.2)
  environment = {**os.environ, **EMULATOR_CLIENT, "EPATH_USE_TF": "false",
                 "STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
                 "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test", "XLA_FLAGS": xla_flags(2)}
  yield url, environment
  server.kill()
  server.wait()


def run(environment, *arguments: str) -> str:
  completed = command_server.run_python(list(arguments), env=environment, timeout=600)
  output = completed.stdout + completed.stderr
  assert completed.returncode == 0, output[-4000:]
  return output


def bucket(url: str) -> gcsfs.GCSFileSystem:
  return gcsfs.GCSFileSystem(endpoint_url=url, token="anon", skip_instance_cache=True)


def test_training_resuming_and_evaluation_with_a_gs_workdir(emulator, tmp_path):
  url, environment = emulator
  workdir = f"gs://{BUCKET}/runs/tiny"
  train = ["-m", "clip_jax.train",
           f"--config={tiny_runs.write_tiny_config_file(tmp_path / 'tiny.py')}",
           f"--workdir={workdir}", *TINY_FLAGS]
  first = run(environment, *train, "--config.total_steps=2")
  assert "step 2/2 | loss" in first
  resumed = run(environment, *train)
  assert f"Resumed from the checkpoint of step 2 in {workdir}." in resumed
  assert f"Training curves: {workdir}/training_curves.png" in resumed

  storage = bucket(url)
  run_path = f"{BUCKET}/runs/tiny"
  assert json.loads(storage.cat(f"{run_path}/config.json"))["total_steps"] == 4
  records = [json.loads(line) for line in storage.cat(f"{run_path}/metrics.jsonl").splitlines()]
  assert [r["step"] for r in records if "loss" in r] == [2, 4]  # a record from each start
  assert [r["step"] for r in records if "zero_shot/shape_top1_seen" in r] == [2, 4]
  events = storage.glob(f"{run_path}/events.out.tfevents.*")
  assert len(events) == 2 and all(storage.size(path) > 100 for path in events)
  assert storage.cat(f"{run_path}/training_curves.png")[:4] == b"\x89PNG"
  assert {path.rsplit("/", 1)[1] for path in storage.ls(f"{run_path}/checkpoints")} >= {"2", "4"}

  evaluation = run(environment, "-m", "clip_jax.evaluate", f"--workdir={workdir}")
  assert f"Wrote {workdir}/evaluation.json" in evaluation
  results = json.loads(storage.cat(f"{run_path}/evaluation.json"))
  last = records[-1]["zero_shot/shape_top1_seen"]
  assert results["zero_shot/shape_top1_seen"] == pytest.approx(last)


def test_sweep_results_and_scaling_tables_in_a_bucket(emulator):
  url, environment = emulator
  sweep_dir = f"gs://{BUCKET}/sweeps/small"
  # A run marked done by the sweep's own code, and a scaling table written and read back.
  output = run({**environment, "PYTHONPATH": os.path.dirname(__file__)}, "-c", f"""
import config_files
from clip_jax import scaling_laws, sweep
first = sweep.expand(config_files.load("scaling/synthetic"))[0]
print("before:", sweep.status(first, {sweep_dir!r}))
sweep.write_result(first, {sweep_dir!r} + "/" + first.name, {{"loss": 1.5}})
print("after:", sweep.status(first, {sweep_dir!r}))
rows = [dict(run=first.name, loss=1.5, train_flops=1e12)]
scaling_laws.write_table(rows, {sweep_dir!r})
print("table:", scaling_laws.read_table({sweep_dir!r} + "/scaling_table.json") == rows)
""")
  assert "before: pending" in output and "after: done" in output and "table: True" in output
  storage = bucket(url)
  (result_path,) = storage.glob(f"{BUCKET}/sweeps/small/*/result.json")
  assert json.loads(storage.cat(result_path))["final"] == {"loss": 1.5}
  assert storage.cat(f"{BUCKET}/sweeps/small/scaling_table.csv").startswith(b"run,model,")
