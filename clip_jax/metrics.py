"""What a long run tells the person watching it: a progress line, TensorBoard summaries (clu), a
JSON-lines log in the workdir that scripts and the final plot read, and the PNG of the curves."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

from clip_jax import files
from clip_jax import host_tensorflow

host_tensorflow.import_tensorflow()  # Before clu imports it: quietly, off the accelerators.

# pylint: disable=g-import-not-at-top,wrong-import-position
from clu import metric_writers
# A Figure without pyplot draws to a file on any machine and leaves the caller's backend (a
# notebook's inline figures) alone.
from matplotlib import figure as figure_lib

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "training_curves.png"


def format_duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class MetricsLogger:
  """Writes every scalar to TensorBoard and to `metrics.jsonl`; only process 0 writes.

  For a remote workdir the TensorBoard events are written to a local folder and copied to the
  workdir after each write: TensorFlow's summary writer knows gs:// but not s3:// or az://, and
  this way every file of the run goes through the one file-system layer (clip_jax.files).
  """

  def __init__(self, workdir: str, enabled: bool = True, start_step: int = 0):
    """`start_step`: the step the run starts after (its restored checkpoint's): the records of
    later steps, written by a run that stopped before its next checkpoint, are dropped, since
    this run writes them again."""
    self.enabled = enabled
    self.workdir = workdir
    self.path = files.path(workdir) / METRICS_FILE
    self.staging = (tempfile.mkdtemp(prefix="clip_jax_events_")
                    if enabled and files.is_remote(workdir) else "")
    if enabled:
      files.path(workdir).mkdir(parents=True, exist_ok=True)
      if self.path.exists():
        kept = [record for record in read_metrics(workdir) if record["step"] <= start_step]
        files.write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept))
      # TensorBoard only: the console gets progress_line, not clu's logging writer.
      self.writer = metric_writers.SummaryWriter(self.staging or workdir)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    scalars = {name: float(value) for name, value in scalars.items()}
    self.writer.write_scalars(step, scalars)
    files.append_text(self.path, json.dumps({"step": step, **scalars}) + "\n")
    if self.staging:
      self.writer.flush()
      files.copy_tree(self.staging, self.workdir)

  def close(self) -> None:
    if self.enabled:
      self.writer.flush()
      self.writer.close()
      if self.staging:
        files.copy_tree(self.staging, self.workdir)
    if self.staging:
      shutil.rmtree(self.staging, ignore_errors=True)


class Throughput:
  """Samples per second and time left, measured between two calls (compilation excluded)."""

  def __init__(self, start_step: int, total_steps: int, samples_per_step: int):
    self.total_steps = total_steps
    self.samples_per_step = samples_per_step
    self.last_step, self.last_time = start_step, time.perf_counter()
    self.samples_per_second = 0.0

  def update(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    if step > self.last_step:
      self.samples_per_second = ((step - self.last_step) * self.samples_per_step
                                 / (now - self.last_time))
    self.last_step, self.last_time = step, now
    steps_per_second = self.samples_per_second / self.samples_per_step
    eta = (self.total_steps - step) / steps_per_second if steps_per_second else float("nan")
    return {"samples_per_second": self.samples_per_second, "eta_seconds": eta}


def progress_line(step: int, total_steps: int, scalars: dict[str, float]) -> str:
  eta = scalars.get("eta_seconds", float("nan"))
  line = (f"step {step:>{len(str(total_steps))}}/{total_steps} | loss {scalars['loss']:.4f} | "
          f"lr {scalars['learning_rate']:.2e} | temp {scalars['temperature']:.4f} | "
          f"{scalars.get('samples_per_second', 0.0):,.0f} samples/s | "
          f"ETA {format_duration(eta) if eta == eta else '?'}")
  skipped = scalars.get("data/skipped_samples", 0)
  return line + (f" | {skipped:,.0f} bad samples skipped" if skipped else "")


def read_metrics(workdir: str) -> list[dict]:
  """The records of metrics.jsonl; a line cut short by a killed process is left out."""
  path = files.path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  records = []
  for line in path.read_text().splitlines():
    try:
      records.append(json.loads(line))
    except ValueError:
      continue
  return [record for record in records if isinstance(record, dict) and "step" in record]


def accuracy_names(records: list[dict]) -> list[str]:
  """The accuracies worth a curve: every evaluator's top-1 and Recall@1, chance levels aside."""
  return sorted({name for record in records for name in record
                 if "/" in name and not name.endswith("_chance")
                 and ("top1" in name.split("/")[-1] or name.endswith("R@1"))})


def plot_training_curves(workdir: str) -> str:
  """Loss and every evaluator's top-1 and R@1 against steps, side by side; returns the PNG's
  path."""
  records = read_metrics(workdir)
  figure = figure_lib.Figure(figsize=(11, 4))
  loss_axes, accuracy_axes = figure.subplots(1, 2)
  losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
  if losses:
    loss_axes.plot(*zip(*losses), label="train loss")
  loss_axes.set(xlabel="step", ylabel="contrastive loss", title="Training loss")
  loss_axes.grid(alpha=0.3)
  for name in accuracy_names(records):
    points = [(r["step"], r[name]) for r in records if name in r]
    accuracy_axes.plot(*zip(*points), marker="o", label=name.removeprefix("zero_shot/"))
  for name in sorted({name for r in records for name in r if name.endswith("_chance")}):
    chance = [r[name] for r in records if name in r][-1]
    accuracy_axes.axhline(chance, linestyle="--", color="gray", linewidth=0.8)
  accuracy_axes.set(xlabel="step", ylabel="top-1 accuracy or Recall@1", ylim=(0, 1),
                    title="Evaluations (dashed: chance)")
  accuracy_axes.grid(alpha=0.3)
  for axes in (loss_axes, accuracy_axes):
    if axes.get_legend_handles_labels()[0]:
      axes.legend(fontsize=8)
  figure.tight_layout()
  path = os.path.join(workdir, PLOT_FILE)
  files.save_figure(figure, path, dpi=120)
  return path
