"""Power-law fits recover known laws from noisy points, their intervals cover the truth as often
as they claim, and a sweep's table becomes fits, a frontier and plots."""

import json
import os

import numpy as np
import pytest

from clip_jax import scaling_laws

COMPUTE = np.geomspace(1e10, 1e14, 16)


def noisy(values, rng, noise=0.03):
  return values * np.exp(rng.normal(0.0, noise, len(values)))


def test_plain_power_law_recovers_its_exponent():
  rng = np.random.default_rng(0)
  law = scaling_laws.fit_power_law(COMPUTE, noisy(3.0 * COMPUTE ** -0.15, rng))
  assert law.alpha == pytest.approx(-0.15, abs=0.01)
  assert law.beta == pytest.approx(3.0, rel=0.3)
  # Whether the intervals hold the truth as often as claimed: the coverage test below.
  assert law.alpha_interval[0] < law.alpha < law.alpha_interval[1]
  assert law.beta_interval[0] < law.beta < law.beta_interval[1]


def test_saturating_power_law_recovers_its_floor_and_exponent():
  rng = np.random.default_rng(1)
  truth = 0.1 + 40.0 * COMPUTE ** -0.2
  law = scaling_laws.fit_power_law(COMPUTE, noisy(truth, rng, 0.01), saturating=True)
  assert law.alpha == pytest.approx(-0.2, abs=0.03)
  assert law.e_inf == pytest.approx(0.1, abs=0.02)
  assert law.e_inf_interval[0] < law.e_inf < law.e_inf_interval[1]
  assert np.allclose(law(COMPUTE), truth, rtol=0.03)
  # A plain law cannot bend to the floor: it fits the same points worse.
  plain = scaling_laws.fit_power_law(COMPUTE, noisy(truth, rng, 0.01))
  assert np.abs(np.log(plain(COMPUTE) / truth)).max() > 3 * np.abs(
      np.log(law(COMPUTE) / truth)).max()


@pytest.mark.parametrize("saturating", [False, True])
def test_intervals_cover_the_truth_at_their_confidence(saturating):
  """Over 200 noisy draws the 95% interval of alpha holds the true exponent about 95% of the time
  (a binomial 95% range for 200 draws is 89-99%)."""
  rng = np.random.default_rng(2)
  truth = (0.1 if saturating else 0.0) + 40.0 * COMPUTE ** -0.2
  covered = 0
  for _ in range(200):
    law = scaling_laws.fit_power_law(COMPUTE, noisy(truth, rng, 0.01), saturating=saturating)
    covered += law.alpha_interval[0] < -0.2 < law.alpha_interval[1]
  assert 0.89 <= covered / 200 <= 0.995


def test_too_few_points_or_non_positive_values_are_refused():
  with pytest.raises(ValueError, match="at least 4"):
    scaling_laws.fit_power_law([1, 2, 3], [3, 2, 1], saturating=True)
  with pytest.raises(ValueError, match="positive"):
    scaling_laws.fit_power_law([1, 2, 3], [1, 0, 1])


def test_frontier_keeps_rows_no_cheaper_row_beats():
  rows = [dict(c=1, e=0.9), dict(c=2, e=0.95), dict(c=3, e=0.7), dict(c=3, e=0.8),
          dict(c=5, e=0.75), dict(c=8, e=0.5)]
  assert [(r["c"], r["e"]) for r in scaling_laws.frontier(rows, "c", "e")] == [
      (1, 0.9), (3, 0.7), (8, 0.5)]


def synthetic_sweep_rows(rng) -> list[dict]:
  """A sweep's table whose error follows a law with a compute-optimal model size: a model of N
  parameters trained on D samples errs 0.05 + 3 N^-0.3 + 2 D^-0.3 (Chinchilla's form), and each
  sample costs 6 N FLOPs."""
  rows = []
  for params in (1e4, 1e5, 1e6):
    for samples in (1e4, 1e5, 1e6, 1e7):
      run = f"n{params:.0e}-s{samples:.0e}"
      for fraction in (0.25, 0.5, 0.75, 1.0):
        seen = fraction * samples
        error = 0.05 + 3 * params ** -0.3 + 2 * seen ** -0.3
        rows.append(dict(run=run, model=f"n{params:.0e}", finished=True, batch_size=32,
                         total_steps=100, step=int(100 * fraction), samples_seen=seen,
                         train_flops=6 * params * seen, params=params, params_image=params / 2,
                         params_text=params / 2, loss=2 * error,
                         **{"zero_shot/top1": 1 - error * np.exp(rng.normal(0, 0.01))}))
  return rows


def test_analyse_writes_the_table_fits_and_plots(tmp_path):
  rows = synthetic_sweep_rows(np.random.default_rng(3))
  summary = scaling_laws.analyse(rows, "zero_shot/top1", str(tmp_path))
  for name in ("scaling_table.csv", "scaling_table.json", "scaling_fits.json",
               "scaling_error.png", "scaling_loss.png"):
    assert os.path.getsize(tmp_path / name) > 0
  assert json.loads((tmp_path / "scaling_fits.json").read_text())["metric"] == "zero_shot/top1"
  assert len(scaling_laws.read_table(str(tmp_path / "scaling_table.json"))) == len(rows)
  # Error falls with compute along the frontier, and larger models take over as compute grows.
  assert summary["error"]["compute"]["plain"]["alpha"] < 0
  models = [model for _, model in summary["error"]["compute_optimal_models"]]
  assert models[0] == "n1e+04" and models[-1] == "n1e+06"
  # Against samples seen, at the largest model, the law's exponent is the one built in.
  assert summary["error"]["samples"]["saturating"]["alpha"] == pytest.approx(-0.3, abs=0.1)
  assert any("error vs compute (plain" in line for line in scaling_laws.summary_lines(summary))
