"""docs/performance.md: every benchmark at small sizes, printed only."""

import doc_commands


def test_every_command_of_the_performance_page_runs(tmp_path):
  workspace = doc_commands.create_workspace(str(tmp_path))
  outputs = doc_commands.run_page("docs/performance.md", workspace)
  assert len(outputs) == len(doc_commands.commands("docs/performance.md")) >= 4
  embedded = next(output for command, output in outputs.items() if "benchmarks.embed" in command)
  assert "| clip_jax.embed | bfloat16 |" in embedded
