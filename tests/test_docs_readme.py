"""README.md as a newcomer follows it: the quickstart's `make demo` (short), converting and
classifying with a pretrained checkpoint, training on generated shards, evaluating a workdir."""

import json
import os

import doc_commands


def test_every_command_and_snippet_of_the_readme_runs(tmp_path):
  workspace = doc_commands.create_workspace(str(tmp_path))
  doc_commands.add_stand_ins(workspace, "ViT-B-32.pt", "cat.jpg")
  outputs = doc_commands.run_page("README.md", workspace)
  assert "zero-shot top-1 on new images" in outputs["make demo"]
  assert os.path.isfile(os.path.join(workspace, "workdirs", "demo", "training_curves.png"))
  evaluation = json.load(open(os.path.join(workspace, "workdirs", "demo", "evaluation.json")))
  assert 0 <= evaluation["zero_shot/shape_top1_seen"] <= 1
  # The classification snippet prints one probability per label, summing to 1.
  printed = [line for line in outputs["python snippet 1"].splitlines()
             if line.startswith(("cat:", "dog:", "car:"))]
  assert len(printed) == 3
  assert abs(sum(float(line.split(": ")[1]) for line in printed) - 1) < 0.01


def test_every_page_with_commands_is_run_by_a_test():
  """A new page of docs gets its commands run: PAGES lists all of them, and each test file
  tests/test_docs_*.py runs some of PAGES."""
  shown = {page for page in ["README.md"] + [f"docs/{name}" for name in os.listdir(
      os.path.join(doc_commands.REPOSITORY, "docs")) if name.endswith(".md")]
           if doc_commands.blocks(page, "sh") or doc_commands.blocks(page, "python")}
  assert shown <= set(doc_commands.PAGES)
  tests_folder = os.path.dirname(os.path.abspath(__file__))
  run = set()
  for name in os.listdir(tests_folder):
    if name.startswith("test_docs_") and name.endswith(".py"):
      with open(os.path.join(tests_folder, name)) as file:
        source = file.read()
      run.update(page for page in doc_commands.PAGES if f'"{page}"' in source)
  assert shown <= run
