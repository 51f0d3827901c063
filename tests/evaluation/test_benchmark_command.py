"""`python -m clip_jax.evaluate --model=... --suite=... --data_dir=...` on a converted checkpoint:
the JSON and the open_clip-layout table it writes, and a run killed mid-suite that resumes at the
task it was on."""

import json
import os
import time

import jax
import numpy as np
import pytest

from clip_jax import pretrained
from clip_jax.models import clip as clip_model
from clip_jax.models import configs
import benchmark_sets
import command_server
import tiny_runs
from xla_flags import xla_flags

SUITE = "cifar10,retrieval/mscoco_2014_5k_test_image_text_retrieval,wilds/fmow"


def _write_suite(root: str) -> dict:
  images = benchmark_sets.random_images(12, seed=0)
  labels = np.arange(12) % 3
  names = ["red thing", "green thing", "blue thing"]
  benchmark_sets.write_task(os.path.join(root, "wds_cifar10_test"),
                            benchmark_sets.classification_samples(images, labels),
                            classnames=names, templates=["a photo of a {c}."])
  metadata = np.stack([np.arange(12) % 2, np.arange(12) % 4, labels], axis=1)
  benchmark_sets.write_task(os.path.join(root, "wds_wilds-fmow_test"),
                            benchmark_sets.classification_samples(images, labels, metadata),
                            classnames=names, templates=["a satellite photo of {c}."])
  captions = [[f"picture {index}", f"image number {index}"] for index in range(6)]
  coco = os.path.join(root, "wds_mscoco_captions")
  benchmark_sets.write_task(coco, benchmark_sets.retrieval_samples(images[:6], captions),
                            dataset_type="retrieval")
  return {"coco_shard": os.path.join(coco, "test", "0.tar")}


def _wait_for(path, condition, process, timeout=300):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if os.path.exists(path):
      try:
        content = json.loads(open(path).read())  # pylint: disable=consider-using-with
      except ValueError:  # being written
        content = None
      if content is not None and condition(content):
        return content
    assert process.poll() is None, "the evaluation ended before it was killed"
    time.sleep(0.2)
  raise AssertionError(f"{path}: not there in {timeout} s")


def test_a_suite_from_the_command_line_killed_mid_suite_resumes(tmp_path):
  model_config = configs.get_model_config("tiny-vit", text=dict(vocab_size=49408))
  checkpoint = str(tmp_path / "converted")
  pretrained.save(checkpoint, model_config,
                  clip_model.init_variables(model_config, jax.random.PRNGKey(0)))
  root = str(tmp_path / "evalsets")
  made = _write_suite(root)
  # COCO's shard, the second task's, is a pipe: the first run blocks there, after writing its
  # first task's results, until it is killed.
  shard_bytes = open(made["coco_shard"], "rb").read()  # pylint: disable=consider-using-with
  os.remove(made["coco_shard"])
  os.mkfifo(made["coco_shard"])
  argv = ["-m", "clip_jax.evaluate", f"--model={checkpoint}", f"--suite={SUITE}",
          f"--data_dir={root}", "--batch_size=8"]
  output = os.path.join(checkpoint, "benchmark.json")
  log = str(tmp_path / "first.log")
  process = command_server.start(argv, stdout=log, cwd=tmp_path)
  try:
    first = _wait_for(output, lambda results: results["tasks"], process)
  finally:
    process.kill()
    process.wait()
  assert list(first["tasks"]) == ["cifar10"]
  os.remove(made["coco_shard"])
  with open(made["coco_shard"], "wb") as file:
    file.write(shard_bytes)

  completed = command_server.run_python(argv, cwd=tmp_path)
  assert completed.returncode == 0, completed.stderr[-3000:]
  results = json.loads(open(output).read())  # pylint: disable=consider-using-with
  assert "[1/3] cifar10: done before, kept" in completed.stderr
  assert results["tasks"]["cifar10"] == first["tasks"]["cifar10"]  # not run again
  assert list(results["tasks"]) == SUITE.split(",")
  assert results["suite"] == SUITE and results["tasks_covered"] == 3
  assert results["weights_sha256"] == first["weights_sha256"]
  mean = np.mean([entry["metrics"]["main_metric"] for entry in results["tasks"].values()])
  assert results["average"] == mean
  table = open(os.path.join(checkpoint, "benchmark.csv")).read()  # pylint: disable=consider-using-with
  header, row = table.splitlines()
  assert header == "name,pretrained,Average perf. on 3 datasets,CIFAR-10,MSCOCO,FMoW"
  assert row.split(",")[:3] == ["converted", "", f"{mean:.4f}"]
  assert "Average" in completed.stdout and "over 3 of 3 tasks" in completed.stdout


def test_two_processes_evaluate_the_suite_as_one(tmp_path):
  """--distributed=explicit: two processes of 4 CPU devices each share every batch, and give the
  results of one process of 8; only the first writes them."""
  model_config = configs.get_model_config("tiny-vit", text=dict(vocab_size=49408))
  checkpoint = str(tmp_path / "converted")
  pretrained.save(checkpoint, model_config,
                  clip_model.init_variables(model_config, jax.random.PRNGKey(0)))
  root = str(tmp_path / "evalsets")
  _write_suite(root)
  argv = ["-m", "clip_jax.evaluate", f"--model={checkpoint}", f"--suite={SUITE}",
          f"--data_dir={root}", "--batch_size=8"]
  single = command_server.run_python([*argv, f"--output={tmp_path / 'one.json'}"], cwd=tmp_path)
  assert single.returncode == 0, single.stderr[-3000:]
  port = tiny_runs.free_port()
  environment = {**os.environ, "XLA_FLAGS": xla_flags(4), "JAX_PLATFORMS": "cpu"}
  logs = [str(tmp_path / f"process{index}.log") for index in range(2)]
  processes = [command_server.start(
      [*argv, f"--output={tmp_path / 'two.json'}", "--distributed=explicit",
       f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={index}"],
      stdout=logs[index], cwd=tmp_path, env=environment) for index in range(2)]
  try:
    returncodes = [process.wait(timeout=300) for process in processes]
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  outputs = [open(log).read() for log in logs]  # pylint: disable=consider-using-with
  assert returncodes == [0, 0], "\n".join(output[-3000:] for output in outputs)
  one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
  for key, entry in one["tasks"].items():
    for metric, value in entry["metrics"].items():
      assert two["tasks"][key]["metrics"][metric] == pytest.approx(value, abs=1e-6), metric
  assert "Wrote" in outputs[0] and "Wrote" not in outputs[1]
