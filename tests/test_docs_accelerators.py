"""docs/accelerators.md: the doctor's checks of this machine, and the plan it shows, compiled by
libtpu for the TPU slice it names. (The page's --max_batch search is shown, not run: each probe
compiles, and tests/test_plan.py covers the search and the compile apart.)"""

import json
import os

import doc_commands


def test_every_command_of_the_accelerators_page_runs(tmp_path):
  workspace = doc_commands.create_workspace(str(tmp_path))
  outputs = doc_commands.run_page("docs/accelerators.md", workspace)
  doctor = json.loads((tmp_path / "tmp" / "doctor.json").read_text())
  assert doctor["problems"] == [] and doctor["tensorflow"]["visible_devices"] == ["CPU"]
  assert doctor["training"]["loss_fell"] and doctor["input_pipeline"]["samples_per_s"] > 0
  assert doctor["input_pipeline"]["cores"] == len(os.sched_getaffinity(0))
  (plain,) = [output for command, output in outputs.items() if "clip_jax.plan" in command]
  assert "| v5p-128 (64 x TPU v5)" in plain and "fits" in plain.splitlines()  # the verdict
  assert "roofline step time" in plain and "chip: cloud.google.com/tpu/docs/v5p" in plain
