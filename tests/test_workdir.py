"""A workdir belongs to one run: a second training on it is refused, a resume with other settings
or other shards under the same pattern is refused naming each change, a damaged newest checkpoint
falls back to the one before it, and a hard-killed run resumes with one metrics record per step
and no leftovers of its last save. An embedding index belongs to one checkpoint: resumed against
a workdir that trained on, or with an edited --texts, it is refused."""

import json
import os
import signal
import socket
import time

import ml_collections
import pytest

import command_server
import tiny_runs
import config_files
import doc_commands
import input_pipeline
import shard_files
from clip_jax import checkpoint
from clip_jax import embeddings
from clip_jax import files
from clip_jax import metrics
from clip_jax import train
from clip_jax import workdir as workdir_lib

CLI_RUN = ["-m", "clip_jax.train", f"--config={config_files.path('synthetic_demo')}",
           "--config.log_every_steps=1", "--config.global_batch_size=16",
           "--config.model.overrides.vision.layers=1", "--config.model.overrides.text.layers=1",
           "--config.evals.zero_shot.every_steps=100000", "--config.checkpoint.every_steps=3",
           "--config.checkpoint.async_save=False", "--config.optim.warmup_steps=1"]


def refusal(completed) -> str:
  """The one line a refused command prints, checked against docs/untrusted_files.md."""
  errors = [line for line in completed.stderr.splitlines() if line.startswith("Error: ")]
  assert completed.returncode == 1 and len(errors) == 1, completed.stderr[-3000:]
  assert "Traceback" not in completed.stderr
  return doc_commands.documented_message("docs/untrusted_files.md",
                                         errors[0].removeprefix("Error: "))


def test_a_second_training_on_a_workdir_is_refused(tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lib.Lock(workdir):  # the first training: this process
    completed = command_server.run_python([*CLI_RUN, f"--workdir={workdir}",
                                           "--config.total_steps=2"])
    assert refusal(completed).startswith(
        f"{workdir} is in use by process {os.getpid()} on {socket.gethostname()} (`")
    assert sorted(os.listdir(workdir)) == [workdir_lib.LOCK]  # nothing of the second run
  assert not os.listdir(workdir)  # released


def test_embed_and_filter_shards_refuse_an_output_folder_in_use(tmp_path):
  out = str(tmp_path / "out")
  shard = tmp_path / "00000.tar"
  shard.write_bytes(b"\0" * 1024)
  with workdir_lib.Lock(out):
    for command in (["-m", "clip_jax.embed", "--model=ckpt", f"--images={shard}"],
                    ["-m", "clip_jax.filter_shards", "--model=ckpt", f"--in={shard}",
                     "--min_score=0.2"]):
      completed = command_server.run_python([*command, f"--out={out}"])
      assert refusal(completed).startswith(f"{out} is in use by process {os.getpid()} on ")


def test_a_lock_whose_holder_is_gone_is_taken_over_and_a_live_one_only_with_break_lock(
    tmp_path, caplog):
  directory = str(tmp_path)
  lock_file = tmp_path / workdir_lib.LOCK
  now = time.time()
  gone = {"host": socket.gethostname(), "pid": 2 ** 22 + 1, "command": "python -m clip_jax.train",
          "started": now, "renewed": now}
  lock_file.write_text(json.dumps(gone))
  with workdir_lib.Lock(directory):
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()
  assert "no longer runs on this host" in caplog.text
  elsewhere = {**gone, "host": "another-host", "pid": 1}
  lock_file.write_text(json.dumps({**elsewhere, "renewed": now - 2 * workdir_lib.STALE_SECONDS}))
  with workdir_lib.Lock(directory):  # silent for longer than STALE_SECONDS: a vanished machine
    pass
  lock_file.write_text(json.dumps(elsewhere))
  with pytest.raises(workdir_lib.WorkdirBusy, match="in use by process 1 on another-host"):
    workdir_lib.Lock(directory).acquire()
  with workdir_lib.Lock(directory, break_lock=True):
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()


@pytest.fixture(scope="module")
def four_steps(tmp_path_factory):
  """A tiny run of 4 steps, checkpointed at steps 2 and 4."""
  workdir = str(tmp_path_factory.mktemp("four_steps"))
  train.train_and_evaluate(tiny_runs.tiny_config(total_steps=4), workdir)
  return workdir


def copy_of(workdir, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  copy = str(tmp_path / "run")
  shutil.copytree(workdir, copy)
  return copy


def test_a_workdir_of_the_older_config_layout_resumes_and_loads(four_steps, tmp_path):
  """A run started before a data source's keys moved into its section goes on, and its
  config.json is rewritten in today's layout once it has."""
  workdir = copy_of(four_steps, tmp_path)
  path = os.path.join(workdir, "config.json")
  with open(path) as file:
    today = json.load(file)
  with open(path, "w") as file:
    json.dump(config_files.old_layout(today), file)
  from clip_jax import pretrained  # pylint: disable=g-import-not-at-top
  run, _, _ = pretrained.read_workdir(workdir)
  assert run.data.source is not None and run.total_steps == 4
  train.train_and_evaluate(tiny_runs.tiny_config(total_steps=6), workdir)
  assert checkpoint.saved_steps(workdir)[-1] == 6
  with open(path) as file:
    rewritten = json.load(file)
  assert "files" not in rewritten["data"] and rewritten["total_steps"] == 6


@pytest.mark.parametrize("change, named", [
    ({"model.overrides.embed_dim": 32}, "model.overrides.embed_dim: 16 -> 32"),
    ({"seed": 7}, "seed: 0 -> 7"),
    ({"data.name": "webdataset", "data.webdataset.files": "/data/{00000..00009}.tar"},
     "data.name: 'synthetic' -> 'webdataset'; data.webdataset.files: '' -> "
     "'/data/{00000..00009}.tar'"),
])
def test_a_resume_with_other_settings_is_refused_naming_each_change(four_steps, tmp_path, change,
                                                                    named):
  workdir = copy_of(four_steps, tmp_path)
  stored = open(os.path.join(workdir, "config.json")).read()
  config = tiny_runs.tiny_config(total_steps=6, **change)
  if "data.name" in change:  # the synthetic world's evaluator needs synthetic data
    config.evals = ml_collections.ConfigDict()
  with pytest.raises(workdir_lib.SettingsChanged) as refused:
    train.train_and_evaluate(config, workdir)
  assert f": {named}. Use a new workdir" in doc_commands.documented_message(
      "docs/untrusted_files.md", str(refused.value))
  assert open(os.path.join(workdir, "config.json")).read() == stored  # still the checkpoints'
  assert checkpoint.saved_steps(workdir) == [2, 4]


def write_shard(path, seed):
  shard_files.write_tar(str(path), [
      member for index in range(8) for member in (
          (f"{index:04d}.jpg", shard_files.encode(shard_files.photo(36, 40, seed + index), "JPEG")),
          (f"{index:04d}.txt", f"photo {seed + index}".encode()))])


def test_a_resume_reading_other_shards_under_the_same_pattern_is_refused(tmp_path):
  shards = tmp_path / "shards"
  shards.mkdir()
  for seed in (0, 100):
    write_shard(shards / f"{seed:05d}.tar", seed)
  config = tiny_runs.webdataset_config(f"{shards}/*.tar")
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  stored = open(os.path.join(workdir, "config.json")).read()
  write_shard(shards / "00200.tar", 200)  # the same glob, another list
  config.total_steps = 6
  with pytest.raises(input_pipeline.DataChanged) as refused:
    train.train_and_evaluate(config, workdir)
  doc_commands.documented_message("docs/untrusted_files.md", str(refused.value))
  assert open(os.path.join(workdir, "config.json")).read() == stored
  os.remove(shards / "00200.tar")
  train.train_and_evaluate(config, workdir)  # the list it started with: resumes
  assert checkpoint.saved_steps(workdir)[-1] == 6


def test_an_index_resumed_against_other_weights_or_texts_is_refused(four_steps, tmp_path):
  workdir = copy_of(four_steps, tmp_path)
  (tmp_path / "images").mkdir()
  for index in range(2):
    (tmp_path / "images" / f"{index}.png").write_bytes(
        shard_files.encode(shard_files.photo(30, 40, seed=index), "PNG"))
  texts = tmp_path / "texts.txt"
  texts.write_text("a red circle\na blue square\n")
  out = str(tmp_path / "index")
  command = ["-m", "clip_jax.embed", f"--model={workdir}", f"--images={tmp_path / 'images'}",
             f"--texts={texts}", f"--out={out}"]
  embedded = command_server.run_python(command)
  assert embedded.returncode == 0, embedded.stderr[-3000:]
  assert json.load(open(os.path.join(out, embeddings.MANIFEST)))["provenance"]["step"] == 4
  assert command_server.run_python(command).returncode == 0  # the same inputs: resumes

  embedded_texts = files.sha256(texts)
  texts.write_text("a red circle\na green square\n")
  assert refusal(command_server.run_python(command)) == (
      f"{out} holds a run with other settings, which resuming would mix into one run: "
      f"provenance.texts_sha256: '{embedded_texts}' -> '{files.sha256(texts)}'. Use a new --out, "
      f"or the model, inputs and flags recorded in {out}/{embeddings.MANIFEST}.")
  texts.write_text("a red circle\na blue square\n")

  train.train_and_evaluate(tiny_runs.tiny_config(total_steps=6), workdir)  # the workdir trains on
  assert ": provenance.step: 4 -> 6; provenance.weights_sha256: '" in refusal(
      command_server.run_python(command))


def test_a_resume_may_change_the_length_and_the_logging(four_steps, tmp_path):
  workdir = copy_of(four_steps, tmp_path)
  train.train_and_evaluate(tiny_runs.tiny_config(total_steps=6, log_every_steps=2), workdir)
  assert checkpoint.saved_steps(workdir)[-1] == 6  # the last max_to_keep of 2, 4 and 6
  assert json.load(open(os.path.join(workdir, "config.json")))["total_steps"] == 6


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(four_steps, tmp_path, caplog,
                                                                  capsys):
  workdir = copy_of(four_steps, tmp_path)
  metadata = os.path.join(workdir, "checkpoints", "4", "state", "_METADATA")
  with open(metadata, "r+") as file:  # finalized, then damaged: a JSONDecodeError in Orbax
    file.truncate(10)
  train.train_and_evaluate(
      tiny_runs.tiny_config(total_steps=tiny_runs.TINY_CHANGES["total_steps"]), workdir)
  assert f"The checkpoint {workdir}/checkpoints/4 does not restore (" in caplog.text
  assert "Resumed from the checkpoint of step 2" in capsys.readouterr().out
  assert checkpoint.saved_steps(workdir) == [4, 6]  # 4 saved anew; max_to_keep=2
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "4" + checkpoint.UNRESTORABLE_SUFFIX))
  steps = [record["step"] for record in metrics.read_metrics(workdir) if "loss" in record]
  assert steps == list(range(1, 7))  # steps 3 and 4 once: the ones of the fallen-back run went


def test_a_hard_killed_run_resumes_with_one_metrics_record_per_step(tmp_path):
  """SIGKILL mid-run: no clean-up at all. The next start takes over the dead process's lock,
  removes the temporary folder of a save it interrupted and drops the metrics records past the
  checkpoint it resumes from; the command exits 0 when finished, 75 when preempted."""
  workdir = str(tmp_path / "run")
  log = str(tmp_path / "first.log")
  process = command_server.start([*CLI_RUN, f"--workdir={workdir}",
                                  "--config.total_steps=100000"], stdout=log)
  deadline = time.time() + 300
  while time.time() < deadline and max(tiny_runs.losses_by_step(workdir) if os.path.exists(
      os.path.join(workdir, metrics.METRICS_FILE)) else [0]) < 5:
    time.sleep(0.2)
  process.send_signal(signal.SIGKILL)
  process.wait(timeout=60)
  killed_at = max(tiny_runs.losses_by_step(workdir))
  saved = checkpoint.saved_steps(workdir)
  assert (os.path.exists(os.path.join(workdir, workdir_lib.LOCK))
          and saved[-1] >= 3), open(log).read()
  interrupted_save = os.path.join(workdir, "checkpoints", f"{saved[-1] + 3}.orbax-checkpoint-tmp-1")
  os.makedirs(os.path.join(interrupted_save, "state"))
  with open(os.path.join(workdir, metrics.METRICS_FILE), "a") as file:
    file.write('{"step": 9')  # a record cut short by the kill

  total = killed_at + 2
  resumed = command_server.run_python([*CLI_RUN, f"--workdir={workdir}",
                                       f"--config.total_steps={total}"])
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"Resumed from the checkpoint of step {saved[-1]}" in resumed.stdout
  assert "no longer runs on this host" in resumed.stderr
  assert not os.path.exists(interrupted_save)
  assert not os.path.exists(os.path.join(workdir, workdir_lib.LOCK))
  steps = [record["step"] for record in metrics.read_metrics(workdir) if "loss" in record]
  assert steps == list(range(1, total + 1))
