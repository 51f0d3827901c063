"""`python -m clip_jax.evaluate` on a converted checkpoint: synthetic zero-shot and zero-shot on
mock TFDS data from the command line, with the results written as JSON."""

import json
import textwrap

import jax

from clip_jax import pretrained
from clip_jax.models import clip as clip_model
from clip_jax.models import configs
import command_server
import config_files

# configs/evaluate.py's CIFAR-10 on mock data, and the synthetic zero-shot evaluation: a config
# file outside the repository that builds on a shipped one by path.
CONFIG = textwrap.dedent(f"""
    from clip_jax import settings

    def get_config():
      config = settings.load_config_file({config_files.path("evaluate")!r}, "cifar10")
      config.evals.cifar10.mock_examples = 24
      config.evals.zero_shot = settings.evaluator(num_images=32, batch_size=16)
      return config
    """)


def test_converted_checkpoint_evaluates_from_the_command_line(tmp_path):
  model_config = configs.get_model_config("tiny-vit", text=dict(vocab_size=49408))
  variables = clip_model.init_variables(model_config, jax.random.PRNGKey(0))
  checkpoint = str(tmp_path / "converted")
  pretrained.save(checkpoint, model_config, variables)
  config_file = tmp_path / "evals_config.py"
  config_file.write_text(CONFIG)
  completed = command_server.run_python(
      ["-m", "clip_jax.evaluate", f"--checkpoint={checkpoint}", f"--config={config_file}",
       "--config.evals.cifar10.batch_size=16"], cwd=tmp_path)
  assert completed.returncode == 0, completed.stderr[-3000:]
  results = json.loads((tmp_path / "converted" / "evaluation.json").read_text())
  for name in ("zero_shot/shape_top1_seen", "cifar10/top1", "cifar10/top5",
               "cifar10/mean_per_class_recall"):
    assert 0.0 <= results[name] <= 1.0, name
  assert "zero-shot top-1 on new images" in completed.stdout
  assert "cifar10" in completed.stdout
