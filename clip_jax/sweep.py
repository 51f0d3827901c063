"""Scaling sweeps: one config names model sizes, sample budgets and batch sizes, and every
combination is an ordinary training run (clip_jax.train) in its own workdir under --sweep_dir.

  python -m clip_jax.sweep --config=configs/scaling/synthetic.py --sweep_dir=workdirs/scaling

runs every run here, one after another. A finished run (its workdir holds result.json) is skipped
and an interrupted one resumes from its last checkpoint, so the same command continues a sweep.
On a cluster, each run is one task:

  --action=status     a line per run: done, partial (with its last step) or pending
  --action=commands   one command per unfinished run, for any scheduler (a TPU pod queue, ...)
  --action=slurm      an sbatch script of a job array whose task i runs run i (--index=i)
  --run=NAME, --index=I   only that run (what the emitted commands do)

Then `python -m clip_jax.scaling_laws --sweep_dir=...` collects the results, fits power laws and
plots them.

A sweep config's `get_config()` returns:
  base             path of the training config every run starts from
  overrides        nested settings applied to the base for every run
  models           label -> dict(name=<a named model; default: the base's>, overrides=<model
                   overrides merged into the base's>): the model sizes
  samples_seen     training samples per run; total_steps = ceil(samples_seen / batch size)
  batch_sizes      global batch sizes
  evaluations      evaluations per run, evenly spaced (the last at the end): the intermediate
                   points of the error-against-compute curves; checkpoints go with them
  warmup_fraction  warmup steps as a fraction of each run's steps (None: the base's warmup)
  metric           the evaluation accuracy whose error clip_jax.scaling_laws fits by default
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from typing import Any, Mapping, NamedTuple

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from clip_jax import checkpoint
from clip_jax import distributed
from clip_jax import files
from clip_jax import flops
from clip_jax import settings
from clip_jax import train

RESULT_FILE = "result.json"
ACTIONS = ("run", "status", "commands", "slurm")
SWEEP_KEYS = ("base", "overrides", "models", "samples_seen", "batch_sizes", "evaluations",
              "warmup_fraction", "metric")
SWEEP_FILE = "sweep.json"  # The sweep config, beside the runs, for clip_jax.scaling_laws.


class Run(NamedTuple):
  name: str  # Also the workdir's name under the sweep directory.
  model: str  # The label of its model size in the sweep config.
  samples_seen: int  # total_steps * batch_size.
  batch_size: int
  training: settings.Run  # The whole training run.


def run_name(model: str, samples_seen: int, batch_size: int) -> str:
  """A run's name, also its workdir's: "<model label>-s<samples>-b<batch size>"."""
  return f"{model}-s{samples_seen}-b{batch_size}"


def model_label(name: str) -> str:
  """The model label of a run's name (labels have no "-")."""
  return name.split("-", 1)[0]


def merge(config: ml_collections.ConfigDict,
          overrides: Mapping[str, Any] | ml_collections.ConfigDict) -> None:
  """Sets `overrides` in `config`, nested mappings into nested sections (which it creates)."""
  for key, value in overrides.items():
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      if key not in config or not isinstance(config[key], ml_collections.ConfigDict):
        config[key] = ml_collections.ConfigDict()
      merge(config[key], value)
    else:
      config[key] = value


def check(sweep: ml_collections.ConfigDict) -> None:
  """Fails before any run on a sweep that cannot expand, naming the key and what is allowed."""
  unknown = sorted(set(sweep.keys()) - set(SWEEP_KEYS))
  if unknown:
    raise ValueError(f"sweep config key {unknown[0]!r} is not a setting; allowed: "
                     f"{', '.join(SWEEP_KEYS)}.")
  if not os.path.isfile(sweep.base):
    raise ValueError(f"base={sweep.base!r} is not a file; allowed: the path of a training config.")
  if not sweep.models:
    raise ValueError("models is empty; allowed: label -> dict(name=..., overrides=...).")
  for label, model in sweep.models.items():
    if not re.fullmatch(r"[A-Za-z0-9_.]+", label):
      raise ValueError(f"models label {label!r}; allowed: letters, digits, '_' and '.' (it "
                       "names workdirs).")
    extra = sorted(set(model.keys()) - {"name", "overrides"})
    if extra:
      raise ValueError(f"models.{label}.{extra[0]} is not a setting; allowed: name, overrides.")
  for key in ("samples_seen", "batch_sizes"):
    values = sweep[key]
    if not values or any(not settings.is_count(v) or v < 1 for v in values):
      raise ValueError(f"{key}={values!r}; allowed: a non-empty list of positive integers.")
  if not settings.is_count(sweep.evaluations) or sweep.evaluations < 1:
    raise ValueError(f"evaluations={sweep.evaluations!r}; allowed: a positive integer.")
  if not isinstance(sweep.get("metric", ""), str):
    raise ValueError(f"metric={sweep.metric!r}; allowed: the name of an evaluation accuracy, "
                     "such as 'zero_shot/shape_top1_seen'.")
  fraction = sweep.get("warmup_fraction")
  if fraction is not None and not 0 <= fraction < 1:
    raise ValueError(f"warmup_fraction={fraction!r}; allowed: None, or from 0 up to 1.")


def run_config(sweep: ml_collections.ConfigDict, base: ml_collections.ConfigDict, model: str,
               samples_seen: int, batch_size: int) -> ml_collections.ConfigDict:
  """The training config of one run: a copy of the base config with the sweep's overrides, the
  model and the budget."""
  config = base.copy_and_resolve_references()
  merge(config, sweep.get("overrides") or {})
  model_spec = sweep.models[model]
  config.model.name = model_spec.get("name", config.model.name)
  merge(config.model.overrides, model_spec.get("overrides") or {})
  steps = math.ceil(samples_seen / batch_size)
  config.global_batch_size = batch_size
  config.total_steps = steps
  interval = math.ceil(steps / sweep.evaluations)
  for evaluator in config.get("evals", {}).values():
    evaluator.every_steps = interval
  config.checkpoint.every_steps = interval
  config.log_every_steps = min(config.log_every_steps, interval)
  if sweep.get("warmup_fraction") is not None:
    config.optim.warmup_steps = round(sweep.warmup_fraction * steps)
  return config


def training_flops(training: settings.Run) -> float:
  """The training compute of a whole run (clip_jax.flops)."""
  return flops.cumulative_train_flops(training.model.architecture, training.global_batch_size,
                                      training.total_steps, training.flip, training.total_steps)


def expand(sweep: ml_collections.ConfigDict) -> list[Run]:
  """Every (model, samples seen, batch size) of the sweep, cheapest first: a sweep cut short
  has its small end complete. The order (and so --index) depends on the config alone."""
  check(sweep)
  base = settings.load_config_file(sweep.base)
  runs = []
  for model in sweep.models:
    for samples_seen in sweep.samples_seen:
      for batch_size in sweep.batch_sizes:
        training = settings.parse(run_config(sweep, base, model, samples_seen, batch_size))
        seen = training.total_steps * batch_size
        runs.append(Run(run_name(model, samples_seen, batch_size), model, seen, batch_size,
                        training))
  return sorted(runs, key=lambda run: (training_flops(run.training), run.name))


def status(run: Run, sweep_dir: str) -> str:
  """"done", "partial (step S of T)" or "pending", from what the run's workdir holds."""
  workdir = os.path.join(sweep_dir, run.name)
  if (files.path(workdir) / RESULT_FILE).exists():
    return "done"
  steps = checkpoint.saved_steps(workdir)
  return f"partial (step {steps[-1]} of {run.training.total_steps})" if steps else "pending"


def write_result(run: Run, workdir: str, final_scalars: dict[str, float]) -> None:
  """result.json: what the run was, its size and compute, and its final metrics. Its presence
  marks the run as done."""
  architecture = run.training.model.architecture
  per_sample = flops.train_flops_per_sample(architecture, run.batch_size)
  result = dict(
      run=run.name, model=run.model, batch_size=run.batch_size, samples_seen=run.samples_seen,
      total_steps=run.training.total_steps, params=flops.parameter_count(architecture),
      train_flops_per_sample={part: cost.total for part, cost in per_sample.items()},
      train_flops=training_flops(run.training),
      final=final_scalars)
  # Written whole (files.write_text): a half-written marker would pass a run as done.
  files.write_text(files.path(workdir) / RESULT_FILE, json.dumps(result, indent=2, sort_keys=True))


def execute(run: Run, sweep_dir: str) -> bool:
  """Trains (or resumes) one run; True when it reached its last step (False: preempted)."""
  workdir = os.path.join(sweep_dir, run.name)
  final_scalars = train.train_and_evaluate(run.training, workdir)
  if run.training.total_steps not in checkpoint.saved_steps(workdir):
    return False
  if jax.process_index() == 0:
    write_result(run, workdir, final_scalars)
  return True


def run_command(config_path: str, sweep_dir: str, selector: str,
                config_flags_given: list[str]) -> str:
  """The command that runs one run (`selector`: --run=NAME or --index=I) of this sweep."""
  return " ".join(["python -m clip_jax.sweep", f"--config={config_path}",
                   f"--sweep_dir={sweep_dir}", *config_flags_given, selector])


def slurm_script(runs: list[Run], config_path: str, sweep_dir: str,
                 config_flags_given: list[str]) -> str:
  """An sbatch script of a job array: task i runs run i; resubmitting it resumes the sweep."""
  command = run_command(config_path, sweep_dir, "--index=$SLURM_ARRAY_TASK_ID",
                        config_flags_given)
  return "\n".join([
      "#!/bin/bash",
      f"#SBATCH --job-name=clip-sweep-{os.path.basename(os.path.normpath(sweep_dir))}",
      f"#SBATCH --array=0-{len(runs) - 1}",
      f"#SBATCH --output={os.path.join(sweep_dir, 'slurm-%A_%a.out')}",
      "# Add your cluster's resources (--nodes, --gpus-per-node, --time, --partition). With",
      "# several nodes, set the base config's distributed.mode='auto': each srun task is one",
      "# process of the run. A finished run is skipped and an interrupted one resumes.",
      f"srun {command}",
      ""])


def select(runs: list[Run], name: str | None, index: int | None) -> list[Run]:
  """The runs that --run or --index pick; all of them without either."""
  if name is not None:
    chosen = [run for run in runs if run.name == name]
    if not chosen:
      raise ValueError(f"--run={name!r} is not a run of this sweep; allowed: "
                       f"{', '.join(run.name for run in runs)}.")
    return chosen
  if index is not None:
    if not 0 <= index < len(runs):
      raise ValueError(f"--index={index}; allowed: 0 to {len(runs) - 1}.")
    return [runs[index]]
  return runs


def define_flags() -> None:
  """The program's flags, defined only when it runs (as clip_jax.train's), so that modules can
  import this one beside other programs."""
  config_flags.DEFINE_config_file("config", None, "Sweep config file.")
  flags.DEFINE_string("sweep_dir", None, "Directory of the runs' workdirs.")
  flags.DEFINE_enum("action", "run", ACTIONS, "What to do with the sweep's runs.")
  flags.DEFINE_string("run", None, "Only this run (its name, as --action=status lists).")
  flags.DEFINE_integer("index", None, "Only the run at this index (a SLURM array task).")
  flags.mark_flags_as_required(["config", "sweep_dir"])


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  options = flags.FLAGS
  sweep_dir = options.sweep_dir
  runs = select(expand(options.config), options.run, options.index)
  config_path = options["config"].config_filename
  given = [arg for arg in sys.argv[1:] if arg.startswith("--config.")]
  if options.action == "status":
    for index, run in enumerate(runs):
      print(f"{index:3d}  {run.name:40s} {status(run, sweep_dir)}")
  elif options.action == "commands":
    for run in runs:
      if status(run, sweep_dir) != "done":
        print(run_command(config_path, sweep_dir, f"--run={run.name}", given))
  elif options.action == "slurm":
    print(slurm_script(runs, config_path, sweep_dir, given), end="")
  else:
    distributed.initialize(runs[0].training.distributed)
    if jax.process_index() == 0:
      files.write_text(files.path(sweep_dir) / SWEEP_FILE,
                       options.config.to_json_best_effort(indent=2) + "\n")
    for index, run in enumerate(runs):
      state = status(run, sweep_dir)
      if state == "done":
        print(f"[{index + 1}/{len(runs)}] {run.name}: done, skipped.", flush=True)
        continue
      print(f"[{index + 1}/{len(runs)}] {run.name}: {state}; {run.training.total_steps} steps of "
            f"{run.batch_size}.", flush=True)
      if not execute(run, sweep_dir):
        print(f"{run.name} stopped before its last step (preempted); the same command resumes "
              "the sweep.", flush=True)
        return
    print(f"Sweep done: python -m clip_jax.scaling_laws --sweep_dir={sweep_dir}", flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=settings.parse_flags)
