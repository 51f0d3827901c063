"""docs/scaling.md: a sweep's run, its status, the paper sweep's SLURM script, the fits and the
FLOPs snippet."""

import os

import doc_commands


def test_every_command_and_snippet_of_the_scaling_page_runs(tmp_path):
  workspace = doc_commands.create_workspace(str(tmp_path))
  outputs = doc_commands.run_page("docs/scaling.md", workspace)
  status = next(output for command, output in outputs.items() if "--action=status" in command)
  assert "w32-s16000-b128" in status and "done" in status
  slurm = next(output for command, output in outputs.items() if "--action=slurm" in command)
  assert "#SBATCH --array=0-8" in slurm
  assert os.path.isfile(os.path.join(workspace, "workdirs", "scaling", "scaling_table.csv"))
