"""docs/accelerators.md: the plans it shows, compiled by libtpu for the TPU slices they name."""

import doc_commands


def test_every_command_of_the_accelerators_page_runs(tmp_path):
  workspace = doc_commands.create_workspace(str(tmp_path))
  plain, largest = doc_commands.run_page("docs/accelerators.md", workspace).values()
  assert "| v5p-128 (64 x TPU v5)" in plain and plain.rstrip().endswith("\nfits")
  assert "roofline step time" in plain and "chip: cloud.google.com/tpu/docs/v5p" in plain
  assert "Largest global batch that fits (to within 1/16): " in largest
  assert "| v5e-16 (16 x TPU v5 lite)" in largest and largest.rstrip().endswith("\nfits")
  assert f"of {doc_commands.PLAN_HBM_GIB:.2f} GiB" in largest
