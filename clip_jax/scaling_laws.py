"""Scaling laws from a sweep (clip_jax.sweep): the results table, power-law fits with confidence
intervals, the compute-optimal frontier, and the plots.

  python -m clip_jax.scaling_laws --sweep_dir=workdirs/scaling

writes into the sweep directory (or --out_dir) scaling_table.csv and scaling_table.json (one row
per evaluation of every run, finished or not), scaling_fits.json, and scaling_error.png and
scaling_loss.png; it prints the fitted exponents.

The laws are those of Cherti et al. 2023 ("Reproducible scaling laws for contrastive
language-image learning"), after Kaplan et al. 2020: a quantity E (zero-shot error = 1 - top-1,
or the contrastive loss) against x (training compute C in FLOPs, model size N in parameters, or
samples seen D) follows a plain power law E = beta * x^alpha, a line in log-log axes, or a
saturating one, E = e_inf + beta * x^alpha, whose floor e_inf the task's irreducible error sets.
  * Against compute, the law is fitted on the compute-optimal frontier: the evaluations (final
    and intermediate, of every run) with a lower E than any evaluation at less compute. Which
    model size sits on the frontier at each compute is the compute-optimal model size.
  * Against model size, on the final evaluations of the runs with the largest sample budget;
    against samples seen, on those of the largest model.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Iterable, NamedTuple, Sequence

from absl import app
from absl import flags
from matplotlib import figure as figure_lib
import numpy as np
from scipy import optimize
from scipy import stats

from clip_jax import files
from clip_jax import flops
from clip_jax import metrics as metrics_lib
from clip_jax import pretrained
from clip_jax import settings
from clip_jax import sweep as sweep_lib

TABLE_FILE = "scaling_table"
FITS_FILE = "scaling_fits.json"
# The table's first columns; every evaluation metric follows.
LEADING_COLUMNS = ("run", "model", "finished", "batch_size", "total_steps", "step", "samples_seen",
                   "train_flops", "params", "params_image", "params_text", "loss")
AXES = {"compute": ("train_flops", "training compute (FLOPs)"),
        "params": ("params", "parameters"),
        "samples": ("samples_seen", "samples seen")}


def read_run(workdir: str) -> list[dict]:
  """One row per evaluation in a run's metrics.jsonl, with the run's size and the training loss
  (the mean of the losses logged since the previous evaluation: one batch's loss is noisy)."""
  config_path = os.path.join(workdir, pretrained.WORKDIR_CONFIG)
  run = settings.parse(settings.upgraded(json.loads(files.read_text(config_path))))
  params = flops.parameter_count(run.model.architecture)
  name = os.path.basename(os.path.normpath(workdir))
  base = dict(run=name, model=sweep_lib.model_label(name), batch_size=run.global_batch_size,
              total_steps=run.total_steps,
              finished=(files.path(workdir) / sweep_lib.RESULT_FILE).exists(),
              params=params["total"], params_image=params["image"], params_text=params["text"])
  rows, losses = {}, []
  # Training logs a record with the loss every log_every_steps, and the evaluations a record of
  # their own. A resumed run may log a step twice; the last record wins.
  for record in metrics_lib.read_metrics(workdir):
    if "loss" in record:
      losses.append(record["loss"])
      continue
    row = rows.setdefault(record["step"], dict(base, step=record["step"]))
    row.update({k: v for k, v in record.items() if "/" in k},
               samples_seen=int(record["samples_seen"]), train_flops=record["train_flops"])
    if losses:
      row["loss"] = float(np.mean(losses))
    losses = []
  return [rows[step] for step in sorted(rows)]


def collect(sweep_dir: str) -> list[dict]:
  """The rows of every run under `sweep_dir` (each subdirectory with a config.json)."""
  rows = []
  for entry in sorted(files.path(sweep_dir).iterdir()):
    if (entry / pretrained.WORKDIR_CONFIG).exists():
      rows.extend(read_run(os.fspath(entry)))
  return rows


def write_table(rows: Sequence[dict], out_dir: str) -> tuple[str, str]:
  """scaling_table.csv and scaling_table.json; returns their paths."""
  columns = list(LEADING_COLUMNS) + sorted({key for row in rows for key in row}
                                           - set(LEADING_COLUMNS))
  table = io.StringIO()
  writer = csv.DictWriter(table, columns)
  writer.writeheader()
  writer.writerows(rows)
  csv_path = os.path.join(out_dir, TABLE_FILE + ".csv")
  files.write_text(csv_path, table.getvalue())
  json_path = os.path.join(out_dir, TABLE_FILE + ".json")
  files.write_text(json_path, json.dumps(list(rows), indent=1))
  return csv_path, json_path


def read_table(path: str) -> list[dict]:
  """The rows of a scaling_table.json."""
  return json.loads(files.read_text(path))


class PowerLaw(NamedTuple):
  """E = e_inf + beta * x^alpha (e_inf = 0 for a plain power law), with confidence intervals."""
  alpha: float
  beta: float
  e_inf: float
  alpha_interval: tuple[float, float]
  beta_interval: tuple[float, float]
  e_inf_interval: tuple[float, float]
  points: int
  saturating: bool

  def __call__(self, x):
    return self.e_inf + self.beta * np.asarray(x, np.float64) ** self.alpha

  def formula(self, symbol: str = "x") -> str:
    floor = f"{self.e_inf:.3g} + " if self.saturating else ""
    return f"E = {floor}{self.beta:.3g} * {symbol}^{self.alpha:.3f}"


def fit_power_law(x: Iterable[float], y: Iterable[float], saturating: bool = False,
                  confidence: float = 0.95) -> PowerLaw:
  """Least squares in log space (each point weighs alike whatever its scale), with intervals from
  the fit's covariance and Student's t.

  The saturating form is fitted with scipy's bounded least squares over (e_inf, log beta, alpha),
  e_inf in [0, min(E)), starting from the plain fit; it needs at least four points.
  """
  x, y = np.asarray(list(x), np.float64), np.asarray(list(y), np.float64)
  if np.any(x <= 0) or np.any(y <= 0):
    raise ValueError("power laws need positive x and E; got a zero or negative value.")
  if len(x) < (4 if saturating else 3):
    raise ValueError(f"{len(x)} points are too few for a {'saturating' if saturating else 'plain'}"
                     f" power law with intervals; allowed: at least {4 if saturating else 3}.")
  log_x, log_y = np.log(x), np.log(y)
  center = log_x.mean()  # Fitting around the mean log x decorrelates beta from alpha.
  line = stats.linregress(log_x - center, log_y)
  t = stats.t.ppf(0.5 + confidence / 2, len(x) - (3 if saturating else 2))
  interval = lambda value, error: (value - t * error, value + t * error)
  beta_interval = lambda log_beta, error: tuple(map(math.exp, interval(log_beta, error)))
  if not saturating:
    alpha, log_beta = line.slope, line.intercept - line.slope * center
    # Var(intercept at x=0) from the centred fit's two independent parameters.
    log_beta_error = math.hypot(line.intercept_stderr, center * line.stderr)
    return PowerLaw(alpha, math.exp(log_beta), 0.0, interval(alpha, line.stderr),
                    beta_interval(log_beta, log_beta_error), (0.0, 0.0), len(x), False)

  def model(log_x_centred, e_inf, log_beta, alpha):
    return np.log(e_inf + np.exp(log_beta + alpha * log_x_centred))

  start = (0.5 * y.min(), line.intercept, min(line.slope, -1e-3))
  bounds = ([0.0, -np.inf, -10.0], [y.min() * (1 - 1e-9), np.inf, 0.0])
  (e_inf, log_beta_c, alpha), covariance = optimize.curve_fit(
      model, log_x - center, log_y, p0=start, bounds=bounds)
  errors = np.sqrt(np.maximum(np.diag(covariance), 0.0))
  log_beta = log_beta_c - alpha * center
  log_beta_error = math.sqrt(max(covariance[1, 1] + center**2 * covariance[2, 2]
                                 - 2 * center * covariance[1, 2], 0.0))
  e_inf_low, e_inf_high = interval(e_inf, errors[0])
  return PowerLaw(alpha, math.exp(log_beta), e_inf, interval(alpha, errors[2]),
                  beta_interval(log_beta, log_beta_error), (max(e_inf_low, 0.0), e_inf_high),
                  len(x), True)


def frontier(rows: Sequence[dict], x_key: str, y_key: str) -> list[dict]:
  """The rows that no row beats with less or equal x: the lower envelope, by increasing x."""
  best, envelope = math.inf, []
  for row in sorted((r for r in rows if r.get(x_key) and r.get(y_key) is not None),
                    key=lambda r: (r[x_key], r[y_key])):
    if row[y_key] < best:
      best = row[y_key]
      envelope.append(row)
  return envelope


def with_error(rows: Sequence[dict], metric: str) -> list[dict]:
  """The rows that have `metric` (an accuracy), each with "error" = 1 - metric."""
  return [dict(row, error=1.0 - row[metric]) for row in rows if row.get(metric) is not None]


def final_rows(rows: Sequence[dict]) -> list[dict]:
  """Each finished run's last evaluation."""
  last = {}
  for row in rows:
    if row["finished"] and row["step"] == row["total_steps"]:
      last[row["run"]] = row
  return list(last.values())


def law_points(rows: Sequence[dict], quantity: str, axis: str) -> list[dict]:
  """The points each law is fitted on (see the module docstring)."""
  x_key = AXES[axis][0]
  if axis == "compute":
    return frontier(rows, x_key, quantity)
  final = [row for row in final_rows(rows) if row.get(quantity) is not None]
  if not final:
    return []
  if axis == "params":
    largest = max(row["samples_seen"] for row in final)
    return sorted((r for r in final if r["samples_seen"] == largest), key=lambda r: r[x_key])
  largest = max(row["params"] for row in final)
  return sorted((r for r in final if r["params"] == largest), key=lambda r: r[x_key])


def fit_laws(rows: Sequence[dict], quantity: str) -> dict[str, dict[str, PowerLaw | None]]:
  """Plain and saturating laws of `quantity` against each axis (None: too few points)."""
  laws = {}
  for axis, (x_key, _) in AXES.items():
    points = law_points(rows, quantity, axis)
    x, y = [p[x_key] for p in points], [p[quantity] for p in points]
    laws[axis] = {}
    for form, saturating in (("plain", False), ("saturating", True)):
      try:
        laws[axis][form] = fit_power_law(x, y, saturating)
      except (ValueError, RuntimeError):  # Too few points, or a fit that does not converge.
        laws[axis][form] = None
  return laws


def compute_optimal_models(rows: Sequence[dict], quantity: str) -> list[tuple[float, str]]:
  """(compute, model) along the frontier, where the best model changes: the compute-optimal
  model size against compute."""
  changes = []
  for row in frontier(rows, "train_flops", quantity):
    if not changes or changes[-1][1] != row["model"]:
      changes.append((row["train_flops"], row["model"]))
  return changes


def draw_laws(rows: Sequence[dict], quantity: str, label: str) -> figure_lib.Figure:
  """Three panels, log-log: `quantity` against compute (every run's evaluations, the frontier and
  its law), against parameters and against samples seen (final evaluations and their laws).

  A matplotlib Figure without pyplot: it saves anywhere, and a notebook displays it as it is.
  """
  laws = fit_laws(rows, quantity)
  figure = figure_lib.Figure(figsize=(16, 4.6))
  panels = figure.subplots(1, 3)
  models = sorted({row["model"] for row in rows}, key=lambda m: min(
      r["params"] for r in rows if r["model"] == m))
  colours = {model: f"C{index % 10}" for index, model in enumerate(models)}
  compute_axes = panels[0]
  for run in sorted({row["run"] for row in rows}):
    points = sorted((r for r in rows if r["run"] == run and r.get(quantity) is not None),
                    key=lambda r: r["train_flops"])
    if points:
      compute_axes.plot([p["train_flops"] for p in points], [p[quantity] for p in points],
                        marker=".", alpha=0.6, color=colours[points[0]["model"]])
  for model in models:
    compute_axes.plot([], [], color=colours[model], label=model)
  for axes, axis in zip(panels, AXES):
    x_key, x_label = AXES[axis]
    points = law_points(rows, quantity, axis)
    if axis == "compute":
      axes.plot([p[x_key] for p in points], [p[quantity] for p in points], "k-o", markersize=4,
                label="frontier", zorder=3)
    else:
      grouping = "samples_seen" if axis == "params" else "params"
      for row in final_rows(rows):
        axes.scatter(row[x_key], row[quantity], color=colours[row["model"]], s=14, alpha=0.6)
      axes.plot([p[x_key] for p in points], [p[quantity] for p in points], "k-o", markersize=4,
                label=f"largest {grouping.replace('_', ' ')}")
    symbol = {"compute": "C", "params": "N", "samples": "D"}[axis]
    for form, style in (("plain", "--"), ("saturating", ":")):
      law = laws[axis][form]
      if law is not None and points:
        grid = np.geomspace(min(p[x_key] for p in points), max(p[x_key] for p in points), 50)
        axes.plot(grid, law(grid), style, color="crimson",
                  label=f"{law.formula(symbol)} (alpha in [{law.alpha_interval[0]:.3f}, "
                        f"{law.alpha_interval[1]:.3f}])")
    axes.set(xscale="log", yscale="log", xlabel=x_label, ylabel=label)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=7)
  for axes, title in zip(panels, ("against compute: the frontier", "against model size",
                                   "against samples seen")):
    axes.set_title(f"{quantity} {title}")
  figure.tight_layout()
  return figure


def quantity_labels(metric: str) -> dict[str, str]:
  """The fitted quantities and their axis labels."""
  return {"error": f"error (1 - {metric})", "loss": "contrastive loss"}


def summarise(rows: Sequence[dict], metric: str) -> dict:
  """The laws of the error (1 - `metric`) and of the loss against each axis, as dicts, and the
  compute-optimal models. `rows` as `collect` returns them."""
  rows = with_error(rows, metric)
  summary = {"metric": metric}
  for quantity in quantity_labels(metric):
    summary[quantity] = {axis: {form: None if law is None else law._asdict()
                                for form, law in forms.items()}
                         for axis, forms in fit_laws(rows, quantity).items()}
    summary[quantity]["compute_optimal_models"] = compute_optimal_models(rows, quantity)
  return summary


def analyse(rows: Sequence[dict], metric: str, out_dir: str) -> dict:
  """Writes the table, the fits and the plots of a sweep's rows into `out_dir`; returns the fits."""
  files.path(out_dir).mkdir(parents=True, exist_ok=True)
  write_table(rows, out_dir)
  summary = summarise(rows, metric)
  files.write_text(os.path.join(out_dir, FITS_FILE), json.dumps(summary, indent=2))
  for quantity, label in quantity_labels(metric).items():
    files.save_figure(draw_laws(with_error(rows, metric), quantity, label),
                      os.path.join(out_dir, f"scaling_{quantity}.png"), dpi=110)
  return summary


def summary_lines(summary: dict) -> list[str]:
  """The fitted laws and the compute-optimal models, for the console and the README."""
  lines = []
  for quantity in ("error", "loss"):
    for axis, forms in summary[quantity].items():
      if axis == "compute_optimal_models":
        models = " -> ".join(f"{model} (from {compute:.2g} FLOPs)" for compute, model in forms)
        lines.append(f"{quantity}: compute-optimal model: {models}")
        continue
      for form, law in forms.items():
        if law is not None:
          lines.append(f"{quantity} vs {axis} ({form}, {law['points']} points): alpha = "
                       f"{law['alpha']:.3f} [{law['alpha_interval'][0]:.3f}, "
                       f"{law['alpha_interval'][1]:.3f}], beta = {law['beta']:.3g}"
                       + (f", e_inf = {law['e_inf']:.3g}" if law["saturating"] else ""))
  return lines


def define_flags() -> None:
  """The program's flags, defined only when it runs (see clip_jax.sweep.define_flags)."""
  flags.DEFINE_string("sweep_dir", None, "A sweep's directory (clip_jax.sweep).")
  flags.DEFINE_string("metric", None, "The accuracy whose error to fit; by default the sweep "
                      "config's `metric`.")
  flags.DEFINE_string("out_dir", None, "Where to write; by default --sweep_dir.")
  flags.mark_flags_as_required(["sweep_dir"])


def main(argv):
  del argv
  sweep_dir = flags.FLAGS.sweep_dir
  metric = flags.FLAGS.metric
  if metric is None:
    metric = json.loads(files.read_text(os.path.join(sweep_dir, sweep_lib.SWEEP_FILE)))["metric"]
  rows = collect(sweep_dir)
  if not rows:
    raise ValueError(f"--sweep_dir={sweep_dir!r} holds no evaluated runs; allowed: the directory "
                     "of a sweep that has run (python -m clip_jax.sweep).")
  summary = analyse(rows, metric, flags.FLAGS.out_dir or sweep_dir)
  print("\n".join(summary_lines(summary)))


if __name__ == "__main__":
  define_flags()
  app.run(main)
