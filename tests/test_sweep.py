"""Sweeps: expansion into training runs, the commands for a scheduler, and an interrupted sweep
that resumes where it stopped, then feeds the scaling-law analysis."""

import json
import os
import textwrap

import ml_collections
import pytest

from clip_jax import scaling_laws
from clip_jax import settings
from clip_jax import sweep
from clip_jax import train
import config_files

DEMO = config_files.path("synthetic_demo")


def tiny_sweep(**changes) -> ml_collections.ConfigDict:
  """Two tiny model sizes x two budgets, a few steps each."""
  tower = dict(width=32, layers=1, head_width=16)
  config = ml_collections.ConfigDict(dict(
      base=os.path.abspath(DEMO),
      overrides=dict(log_every_steps=2, evals=dict(zero_shot=dict(num_images=32),
                                                   benchmark=dict(num_images=16)),
                     data=dict(synthetic=dict(colours=("red", "green", "blue", "orange")))),
      models=dict(small=dict(overrides=dict(embed_dim=16, vision=dict(tower, patch_size=8),
                                            text=tower)),
                  large=dict(overrides=dict(embed_dim=16, vision=dict(tower, width=64,
                                                                      patch_size=8),
                                            text=dict(tower, width=64)))),
      samples_seen=(64, 100), batch_sizes=(16,), evaluations=2, warmup_fraction=0.25,
      metric="zero_shot/shape_top1_seen"))
  config.update(changes)
  return config


def test_expansion_builds_one_training_config_per_combination():
  runs = sweep.expand(tiny_sweep())
  assert sorted(run.name for run in runs) == ["large-s100-b16", "large-s64-b16",
                                              "small-s100-b16", "small-s64-b16"]
  flops = [sweep.training_flops(run.training) for run in runs]
  assert flops == sorted(flops)  # Cheapest first.
  run = next(run for run in runs if run.name == "small-s100-b16")
  training = run.training  # Parsed: every run's config passed the settings' checks.
  assert training.total_steps == 7 and run.samples_seen == 7 * 16  # ceil(100 / 16)
  assert training.global_batch_size == 16
  assert training.evals["zero_shot"].every_steps == 4 and training.checkpoint.every_steps == 4
  assert training.optim.warmup_steps == 2
  assert training.model.architecture.vision.width == 32
  assert training.model.architecture.vision.image_size == 24  # The base's, kept.
  assert training.data.source.colours == ("red", "green", "blue", "orange")
  assert training.data.seed == 0 and training.data.name == "synthetic"  # The base's, kept.


@pytest.mark.parametrize("changes,message", [
    (dict(epochs=3), "'epochs' is not a setting; allowed: base, overrides"),
    (dict(samples_seen=(64, 0)), "samples_seen=.*allowed: a non-empty list of positive"),
    (dict(base="/nowhere/config.py"), "is not a file"),
    (dict(evaluations=0), "evaluations=0; allowed"),
    (dict(models=dict(bad_label=dict(name="tiny-vit", size=3))),
     "models.bad_label.size is not a setting"),
])
def test_bad_sweep_configs_name_the_key(changes, message):
  with pytest.raises(ValueError, match=message):
    sweep.expand(tiny_sweep(**changes))


def test_selection_and_scheduler_commands(tmp_path):
  runs = sweep.expand(tiny_sweep())
  assert sweep.select(runs, None, 2) == [runs[2]]
  assert sweep.select(runs, "large-s64-b16", None)[0].name == "large-s64-b16"
  with pytest.raises(ValueError, match="--index=4; allowed: 0 to 3"):
    sweep.select(runs, None, 4)
  with pytest.raises(ValueError, match="--run='nope' is not a run"):
    sweep.select(runs, "nope", None)
  script = sweep.slurm_script(runs, "sweep.py", str(tmp_path), ["--config.evaluations=3"])
  assert "#SBATCH --array=0-3" in script
  assert "--index=$SLURM_ARRAY_TASK_ID" in script and "--config.evaluations=3" in script
  command = sweep.run_command("sweep.py", str(tmp_path), "--run=small-s64-b16", [])
  assert command.startswith("python -m clip_jax.sweep --config=sweep.py")


def test_interrupted_sweep_resumes_and_feeds_the_analysis(tmp_path, monkeypatch, capsys):
  config_file = tmp_path / "sweep_config.py"
  config_file.write_text(textwrap.dedent(f"""
      import ml_collections
      def get_config():
        return ml_collections.ConfigDict({tiny_sweep().to_dict()!r})
      """))
  sweep_dir = tmp_path / "runs"
  runs = sweep.expand(settings.load_config_file(str(config_file)))[:2]
  first, second = runs

  assert sweep.execute(first, str(sweep_dir)) is True
  # The second run is preempted at step 3: SIGTERM's path in clip_jax.train.
  check = train._Preemption.check

  def sigterm_at_step_3(self, step):
    self.requested = self.requested or step == 3
    return check(self, step)

  monkeypatch.setattr(train._Preemption, "check", sigterm_at_step_3)
  assert sweep.execute(second, str(sweep_dir)) is False
  monkeypatch.setattr(train._Preemption, "check", check)
  assert sweep.status(first, str(sweep_dir)) == "done"
  assert sweep.status(second, str(sweep_dir)) == (
      f"partial (step 3 of {second.training.total_steps})")
  capsys.readouterr()

  # What a scheduler would be given: the unfinished run only.
  unfinished = [run.name for run in runs if sweep.status(run, str(sweep_dir)) != "done"]
  assert unfinished == [second.name]
  assert sweep.execute(second, str(sweep_dir)) is True
  assert "Resumed from the checkpoint of step 3" in capsys.readouterr().out

  for run in runs:
    result = json.loads((sweep_dir / run.name / sweep.RESULT_FILE).read_text())
    assert result["samples_seen"] == run.training.total_steps * run.batch_size
    assert result["train_flops"] == pytest.approx(sweep.training_flops(run.training))
    assert result["final"]["zero_shot/shape_top1_seen"] >= 0
    records = [json.loads(line) for line in open(sweep_dir / run.name / "metrics.jsonl")]
    logged = [r for r in records if "loss" in r]
    assert logged[-1]["samples_seen"] == result["samples_seen"]
    assert logged[-1]["train_flops"] == pytest.approx(result["train_flops"])

  rows = scaling_laws.collect(str(sweep_dir))
  assert {row["run"] for row in rows} == {first.name, second.name}
  for run in runs:
    steps = [row["step"] for row in rows if row["run"] == run.name]
    # Every evaluation once, the resumed run's included, in order.
    assert steps == sorted(set(steps)) and steps[-1] == run.training.total_steps
  assert all(row["finished"] and row["params"] > 0 and row["loss"] > 0 for row in rows)
  summary = scaling_laws.analyse(rows, "zero_shot/shape_top1_seen", str(tmp_path / "out"))
  assert os.path.exists(tmp_path / "out" / "scaling_error.png")
  assert summary["metric"] == "zero_shot/shape_top1_seen"
  # The quickstart's benchmark evaluator: the suite's average and each task, fitted alike.
  assert all(0 <= row["benchmark/average"] <= 1 for row in rows)
  for metric in ("benchmark/average", "benchmark/synthetic/captions"):
    rows_with_error = scaling_laws.with_error(rows, metric)
    assert [row["error"] for row in rows_with_error] == [1 - row[metric] for row in rows]
    assert scaling_laws.summarise(rows, metric)["metric"] == metric
