"""Evaluates a trained or converted model: `python -m clip_jax.evaluate --workdir=<run>` or
`--checkpoint=<converted dir> --config=<file with evals>`.

Runs every evaluator of the config's `evals` (by default the training run's own) once, sharded
over all devices as in training, and writes the metrics as JSON beside a readable table. A
converted checkpoint is evaluated with the tokenizer it carries and the model's image size (or
--image_size and --context_length, its positions interpolated); the config's `data` section still
names the synthetic world for synthetic evaluators.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from ml_collections import config_flags

from clip_jax import files  # pylint: disable=g-import-not-at-top,wrong-import-position
from clip_jax import encoding
from clip_jax import pretrained
from clip_jax import settings
from clip_jax import sharding
from clip_jax.evaluation import evaluators
from clip_jax.models import clip as clip_model
from clip_jax.models import towers

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config whose `evals` (and `data`) to "
                                          "use; by default the workdir's own.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir: its latest checkpoint.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A directory written by clip_jax.convert.")
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
                              "evaluation.json in the workdir or checkpoint directory.")


def evaluate(model, variables, evals: evaluators.Evaluators, data: settings.Data,
             step: int = 0) -> dict[str, float]:
  """Every evaluator of `evals`, once (all are due at their last step, `step`)."""
  evaluators.check_data(evals)
  mesh = sharding.create_mesh()
  encode_image, encode_text = encoding.make_encoders(model, variables, mesh)
  return evaluators.run_evaluators(evals, encode_image, encode_text, step, data=data,
                                   view=model.config.preprocessing, total_steps=step)


def main(argv):
  del argv
  if bool(_WORKDIR.value) == bool(_CHECKPOINT.value):
    raise app.UsageError("Give exactly one of --workdir and --checkpoint.")
  if _USE_EMA.value and _CHECKPOINT.value:
    raise app.UsageError("--use_ema needs --workdir: a converted checkpoint holds one set of "
                         "parameters.")
  given = settings.parse(_CONFIG.value) if _CONFIG.value else None
  if _WORKDIR.value:
    run, model, variables = pretrained.read_workdir(_WORKDIR.value, _USE_EMA.value)
    evals = given.evals if given else run.evals
    data, step, directory = run.data, run.total_steps, _WORKDIR.value
  else:
    if given is None:
      raise app.UsageError("--checkpoint needs --config, for the evaluators to run.")
    architecture, variables = pretrained.read(_CHECKPOINT.value)
    model, evals, step = clip_model.CLIP(architecture), given.evals, 0
    directory = _CHECKPOINT.value
    data = pretrained.checkpoint_data(directory, architecture, given.data)
  model, variables, data = pretrained.resized(model, variables, data, _IMAGE_SIZE.value,
                                              _CONTEXT_LENGTH.value,
                                              _POSITION_INTERPOLATION.value)
  results = evaluate(model, variables, evals, data, step)
  output = _OUTPUT.value or os.path.join(directory, "evaluation.json")
  files.write_text(output, json.dumps(results, indent=2, sort_keys=True))
  print("\n".join(evaluators.summary_lines(evals, results)))
  print("\n".join(f"{name:<40} {value:.4f}" for name, value in sorted(results.items())))
  print(f"Wrote {output}")


if __name__ == "__main__":
  app.run(main, flags_parser=settings.parse_flags)
