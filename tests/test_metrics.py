"""The final plot: which evaluations get a curve, and that drawing it leaves matplotlib's backend
(a notebook's inline figures) as it was."""

import json
import os
import subprocess
import sys

from clip_jax import metrics


def test_curves_for_every_evaluators_top1_and_recall_at_1():
  records = [{"step": 1, "loss": 2.0, "zero_shot/shape_top1_seen": 0.5,
              "zero_shot/shape_chance": 0.25, "cifar10/top1": 0.3, "cifar10/top5": 0.6,
              "cifar10_probe/validation_top1": 0.4, "coco/image_to_text_R@1": 0.1,
              "coco/image_to_text_R@10": 0.5, "coco/text_to_image_R@1": 0.2}]
  assert metrics.accuracy_names(records) == [
      "cifar10/top1", "cifar10_probe/validation_top1", "coco/image_to_text_R@1",
      "coco/text_to_image_R@1", "zero_shot/shape_top1_seen"]


def test_plot_is_a_png_and_keeps_the_callers_backend(tmp_path):
  with open(tmp_path / metrics.METRICS_FILE, "w") as file:
    for step in (1, 2):
      file.write(json.dumps({"step": step, "loss": 3.0 - step, "cifar10/top1": 0.1 * step}) + "\n")
  # A fresh interpreter whose chosen backend is not Agg, as a notebook's inline backend is not.
  script = ("import matplotlib; from clip_jax import metrics; "
            f"path = metrics.plot_training_curves({str(tmp_path)!r}); "
            "print(matplotlib.get_backend(), path)")
  output = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                          text=True, env={**os.environ, "MPLBACKEND": "svg"}).stdout.split()
  assert output[0] == "svg"
  with open(output[1], "rb") as file:
    assert file.read(8) == b"\x89PNG\r\n\x1a\n"
