"""Evaluates a trained or converted model: `python -m clip_jax.evaluate --workdir=<run>` or
`--checkpoint=<converted dir> --config=<file with evals>`.

Runs every evaluator of the config's `evals` (by default the training run's own) once, sharded
over all devices as in training, and writes the metrics as JSON beside a readable table. A
converted checkpoint is evaluated with CLIP's BPE and the model's image size; the config's `data`
section still names the synthetic world for synthetic evaluators.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
import ml_collections
from ml_collections import config_flags

from clip_jax import pretrained  # pylint: disable=g-import-not-at-top,wrong-import-position
from clip_jax import sharding
from clip_jax.evaluation import evaluators
from clip_jax.models import clip as clip_model

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config whose `evals` (and `data`) to "
                                          "use; by default the workdir's own.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir: its latest checkpoint.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A directory written by clip_jax.convert.")
_OUTPUT = flags.DEFINE_string("output", None, "JSON file for the results; by default "
                              "evaluation.json in the workdir or checkpoint directory.")


def evaluate(model, variables, evals_config, data_config, step: int = 0) -> dict[str, float]:
  """Every evaluator of `evals_config`, once (all are due at their last step, `step`)."""
  evaluators.check(evals_config, data_config)
  mesh = sharding.create_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1)))
  encode_image, encode_text = evaluators.make_encoders(model, variables, mesh)
  return evaluators.run_evaluators(evals_config, encode_image, encode_text, step,
                                   data_config=data_config, total_steps=step)


def _converted_data_config(data_config, model_config):
  """The config's data section with the converted model's tokenizer, context and image size."""
  data_config = ml_collections.ConfigDict(data_config.to_dict())
  data_config.update(dict(tokenizer="clip_bpe", image_size=model_config.vision.image_size,
                          context_length=model_config.text.context_length))
  return data_config


def main(argv):
  del argv
  if bool(_WORKDIR.value) == bool(_CHECKPOINT.value):
    raise app.UsageError("Give exactly one of --workdir and --checkpoint.")
  if _WORKDIR.value:
    run_config, model, variables = pretrained.read_workdir(_WORKDIR.value)
    config = _CONFIG.value or run_config
    data_config, step, directory = config.data, int(run_config.total_steps), _WORKDIR.value
  else:
    if _CONFIG.value is None:
      raise app.UsageError("--checkpoint needs --config, for the evaluators to run.")
    model_config, variables = pretrained.read(_CHECKPOINT.value)
    model, config, step = clip_model.CLIP(model_config), _CONFIG.value, 0
    data_config = _converted_data_config(config.data, model_config)
    directory = _CHECKPOINT.value
  results = evaluate(model, variables, config.evals, data_config, step)
  output = _OUTPUT.value or os.path.join(directory, "evaluation.json")
  with open(output, "w") as file:
    json.dump(results, file, indent=2, sort_keys=True)
  print("\n".join(evaluators.summary_lines(config.evals, results)))
  print("\n".join(f"{name:<40} {value:.4f}" for name, value in sorted(results.items())))
  print(f"Wrote {output}")


if __name__ == "__main__":
  app.run(main)
