"""docs/training.md and docs/several_hosts.md: their training commands (bfloat16 with remat,
SigLIP's blockwise loss, FLIP, LiT from a converted checkpoint, FSDP) and config snippet."""

import os

import doc_commands


def test_every_command_of_the_training_page_runs(tmp_path):
  workspace = doc_commands.create_workspace(str(tmp_path))
  doc_commands.add_stand_ins(workspace, "ckpt/vit-b-32")
  outputs = doc_commands.run_page("docs/training.md", workspace)
  lit = next(output for command, output in outputs.items() if "workdirs/lit" in command)
  assert "Fine-tuning from ckpt/vit-b-32" in lit
  for run in ("bf16", "siglip", "flip", "lit"):
    assert os.path.isdir(os.path.join(workspace, "workdirs", run, "checkpoints")), run


def test_every_command_of_the_several_hosts_page_runs(tmp_path):
  workspace = doc_commands.create_workspace(str(tmp_path))
  doc_commands.run_page("docs/several_hosts.md", workspace)
  assert os.path.isdir(os.path.join(workspace, "workdirs", "fsdp", "checkpoints"))
