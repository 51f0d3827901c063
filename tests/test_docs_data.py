"""docs/data.md: writing shards and training on TFRecord, TFDS (mocked), CSV and a mixture."""

import os

import doc_commands


def test_every_command_and_snippet_of_the_data_page_runs(tmp_path):
  workspace = doc_commands.create_workspace(str(tmp_path))
  doc_commands.add_stand_ins(workspace, "data/train.tsv")
  doc_commands.run_page("docs/data.md", workspace)
  for run in ("tfrecord", "tfds", "csv", "mixture"):
    assert os.path.isfile(os.path.join(workspace, "workdirs", run, "metrics.jsonl")), run
