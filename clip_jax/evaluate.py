"""Evaluates a trained or converted model: `python -m clip_jax.evaluate --workdir=<run>` or
`--checkpoint=<converted dir> --config=<file with evals>`, or on the benchmark suite:
`--model=<either> --suite=datacomp --data_dir=<root>`.

Runs every evaluator of the config's `evals` (by default the training run's own) once, sharded
over all devices as in training, and writes the metrics as JSON beside a readable table. A
converted checkpoint is evaluated with the tokenizer it carries and the model's image size (or
--image_size and --context_length, its positions interpolated); the config's `data` section still
names the synthetic world for synthetic evaluators.

With --suite, it runs the benchmark's tasks whose data it finds under --data_dir
(`clip_jax.evaluation.benchmark`), writing benchmark.json after each task and the suite's row of
open_clip's results table beside it (benchmark.csv). The file keeps every task's results of the
same weights, whichever suite ran them: a killed run goes on from the task it was on, and a
larger suite runs only the tasks not done.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
import jax
from ml_collections import config_flags

from clip_jax import distributed  # pylint: disable=g-import-not-at-top,wrong-import-position
from clip_jax import encoding
from clip_jax import files
from clip_jax import pretrained
from clip_jax import settings
from clip_jax import sharding
from clip_jax.evaluation import benchmark
from clip_jax.evaluation import benchmark_tasks
from clip_jax.evaluation import evaluators
from clip_jax.models import clip as clip_model
from clip_jax.models import towers
from input_pipeline import tokenizers

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config whose `evals` (and `data`) to "
                                          "use; by default the workdir's own.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir: its latest checkpoint.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A directory written by clip_jax.convert.")
_MODEL = flags.DEFINE_string("model", None, "A training workdir or a converted checkpoint.")
_SUITE = flags.DEFINE_string("suite", None, "Evaluate on the benchmark: a suite ("
                             f"{', '.join(benchmark_tasks.SUITES)}) or comma-separated task "
                             "keys, instead of the config's evaluators.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "With --suite: the folder DataComp's download "
                                "script fills (the tasks' WebDataset folders and hf_cache/), "
                                "which may hold TFDS data too; local or gs://.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "With --suite: images or texts encoded at "
                                   "once, over all devices.")
_USE_EMA = flags.DEFINE_bool("use_ema", False, "Evaluate the workdir's moving average of the "
                             "parameters (a run with ema_decay > 0) instead of its parameters.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Evaluate at this image size instead of "
                                   "the model's, its learned positions interpolated.")
_CONTEXT_LENGTH = flags.DEFINE_integer("context_length", None, "Evaluate with this many text "
                                       "tokens instead of the model's, likewise.")
_POSITION_INTERPOLATION = flags.DEFINE_enum(
    "position_interpolation", None, list(towers.POSITION_INTERPOLATIONS),
    "How positions are interpolated: as open_clip or as transformers does; by default the image "
    "tower family's own way.")
_OUTPUT = flags.DEFINE_string("output", None, "JSON file for the results; by default "
                              "evaluation.json (with --suite: benchmark.json) in the workdir or "
                              "checkpoint directory.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "off", list(settings.DISTRIBUTED_MODES), "Several processes (one per host or "
    "GPU, each started with this command) evaluating as one, every device of every process "
    "sharing each batch: 'auto' on a TPU pod slice or under SLURM / Open MPI, 'explicit' with "
    "--coordinator_address, --num_processes and --process_id (docs/several_hosts.md).")
_COORDINATOR_ADDRESS = flags.DEFINE_string("coordinator_address", "", "'host:port' of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "How many processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index.")
_CSV_SUFFIX = ".csv"


def evaluate(model, variables, evals: evaluators.Evaluators, data: settings.Data,
             step: int = 0) -> dict[str, float]:
  """Every evaluator of `evals`, once (all are due at their last step, `step`)."""
  evaluators.check_data(evals)
  mesh = sharding.create_mesh()
  encode_image, encode_text = encoding.make_encoders(model, variables, mesh)
  return evaluators.run_evaluators(evals, encode_image, encode_text, step, data=data,
                                   view=model.config.preprocessing, total_steps=step)


def _model_path() -> str:
  given = [value for value in (_MODEL.value, _WORKDIR.value, _CHECKPOINT.value) if value]
  if len(given) != 1:
    raise app.UsageError("Give exactly one of --model, --workdir and --checkpoint.")
  return given[0]


def _join_processes() -> None:
  """`jax.distributed.initialize` as the --distributed flags ask, before JAX computes anything."""
  keys = dict(coordinator_address=_COORDINATOR_ADDRESS.value, num_processes=_NUM_PROCESSES.value,
              process_id=_PROCESS_ID.value)
  unset = settings.Distributed()
  try:
    distributed.initialize(settings.distributed_settings(
        mode=_DISTRIBUTED.value, **{key: value for key, value in keys.items()
                                    if value != getattr(unset, key)}))
  except ValueError as error:
    raise app.UsageError(str(error).replace("distributed.", "--")) from None


def main(argv):
  del argv
  path = _model_path()
  _join_processes()
  given = settings.parse(_CONFIG.value) if _CONFIG.value else None
  if pretrained.is_workdir(path) and not _CHECKPOINT.value:
    run, model, variables = pretrained.read_workdir(path, _USE_EMA.value)
    evals, data, step = (given or run).evals, run.data, run.total_steps
  elif pretrained.is_converted(path) and not _WORKDIR.value:
    if _USE_EMA.value:
      raise app.UsageError("--use_ema needs a training workdir: a converted checkpoint holds one "
                           "set of parameters.")
    if given is None and not _SUITE.value:
      raise app.UsageError(f"{path} is a converted checkpoint: give --config, for the evaluators "
                           "to run, or --suite.")
    architecture, variables = pretrained.read(path)
    model, step = clip_model.CLIP(architecture), 0
    evals = given.evals if given else {}
    data = pretrained.checkpoint_data(path, architecture, given.data if given else settings.Data())
  else:
    raise app.UsageError(f"{path} is neither a training workdir (config.json beside checkpoints/)"
                         " nor a converted checkpoint (model.json: see clip_jax.convert).")
  model, variables, data = pretrained.resized(model, variables, data, _IMAGE_SIZE.value,
                                              _CONTEXT_LENGTH.value,
                                              _POSITION_INTERPOLATION.value)
  if _SUITE.value:
    output = _OUTPUT.value or os.path.join(path, "benchmark.json")
    evaluate_suite(model, variables, data, path, output)
    return
  output = _OUTPUT.value or os.path.join(path, "evaluation.json")
  results = evaluate(model, variables, evals, data, step)
  if jax.process_index() == 0:  # every process has the same results
    files.write_text(output, json.dumps(results, indent=2, sort_keys=True))
    print("\n".join(evaluators.summary_lines(evals, results)))
    print("\n".join(f"{name:<40} {value:.4f}" for name, value in sorted(results.items())))
    print(f"Wrote {output}")


def evaluate_suite(model, variables, data: settings.Data, path: str, output: str) -> None:
  """The benchmark suite --suite on the model, resumed from `output` if it holds the same
  model's results (the same weights and evaluation size)."""
  tasks = benchmark_tasks.suite_tasks(_SUITE.value)
  identity = {"model": path, "weights_sha256": pretrained.variables_digest(variables),
              "image_size": data.image_size, "context_length": data.context_length}
  previous = benchmark.read_results(output)
  if previous is not None and {key: previous.get(key) for key in identity} != identity:
    held = previous.get("model", "not the benchmark's")
    raise app.UsageError(f"{output} holds other results ({held}, or other weights or sizes): "
                         "give another --output.")
  mesh = sharding.create_mesh()
  encode_image, encode_text = encoding.make_encoders(model, variables, mesh)
  suite_model = benchmark.Model(encode_image, encode_text,
                                tokenizers.create_tokenizer(data).tokenize, data.image_size,
                                model.config.preprocessing)

  def save(results):  # by the first process: every process computes the same results
    mean, covered = benchmark.average(tasks, results)
    if jax.process_index() == 0:
      files.write_text(output, json.dumps({**identity, "suite": _SUITE.value, "average": mean,
                                           "tasks_covered": covered, **results}, indent=2))

  results = benchmark.evaluate_suite(tasks, suite_model, data_dir=_DATA_DIR.value,
                                     batch_size=_BATCH_SIZE.value, results=previous, save=save)
  save(results)
  if jax.process_index() == 0:
    table = output.removesuffix(".json") + _CSV_SUFFIX
    files.write_text(table, benchmark.results_table(
        tasks, results, name=os.path.basename(os.path.normpath(path)),
        pretrained="ema" if _USE_EMA.value else ""))
    print("\n".join(benchmark.summary_lines(tasks, results)))
    print(f"Wrote {output} and {table}")


if __name__ == "__main__":
  app.run(main, flags_parser=settings.parse_flags)
