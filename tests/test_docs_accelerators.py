"""docs/accelerators.md: the plan it shows, compiled by libtpu for the TPU slice it names. (The
page's --max_batch search is shown, not run: each probe compiles, and tests/test_plan.py covers
the search and the compile apart.)"""

import doc_commands


def test_every_command_of_the_accelerators_page_runs(tmp_path):
  workspace = doc_commands.create_workspace(str(tmp_path))
  (plain,) = doc_commands.run_page("docs/accelerators.md", workspace).values()
  assert "| v5p-128 (64 x TPU v5)" in plain and "fits" in plain.splitlines()  # the verdict
  assert "roofline step time" in plain and "chip: cloud.google.com/tpu/docs/v5p" in plain
