"""benchmarks/common.py's record of a run: the dated log grows, RESULTS.md keeps one current
section per benchmark under an index of them."""

import subprocess
import sys

from benchmarks import common


def test_a_run_is_logged_and_replaces_its_benchmarks_section(tmp_path, monkeypatch):
  results, history = tmp_path / "RESULTS.md", tmp_path / "HISTORY.md"
  intro = f"# Benchmark results\n\nIntro.\n\n{common.INDEX_START}\n{common.INDEX_END}\n\n"
  old = ["## Train step\n\n- date: 2026-01-01\n- command: `python -m benchmarks.train_step`\n\n"
         "| step s |\n|---|\n| 9.0 |\n",
         "## Search: seconds per query\n\n- recorded by hand\n\n| s |\n|---|\n| 1.0 |\n"]
  results.write_text(common.join_sections(intro, old))
  history.write_text("# Benchmark history\n")
  monkeypatch.setattr(common, "RESULTS_PATH", str(results))
  monkeypatch.setattr(common, "HISTORY_PATH", str(history))
  monkeypatch.setattr(common, "machine_description", lambda: "a test machine")
  monkeypatch.setattr(sys, "argv", ["benchmarks/train_step.py", "--steps=1"])
  common.append_results("Train step", "| step s |\n|---|\n| 4.0 |", "Notes.")
  common.append_results("Loss", "| loss s |\n|---|\n| 2.0 |")

  intro_now, sections = common.split_sections(results.read_text())
  assert [common.section_title(section) for section in sections] == [
      "Train step", "Search: seconds per query", "Loss"]
  assert "| 4.0 |" in sections[0] and "9.0" not in sections[0] and "Notes." in sections[0]
  assert "- command: `python -m benchmarks.train_step --steps=1`" in sections[0]
  assert f"- commit: {common.commit()}" in sections[0]
  assert sections[1] == old[1]
  index_rows = intro_now.splitlines()[intro_now.splitlines().index(common.INDEX_START) + 3:][:3]
  assert index_rows[0].startswith("| [Train step](#train-step) | ")
  assert "`python -m benchmarks.train_step --steps=1`" in index_rows[0]
  assert index_rows[1] == ("| [Search: seconds per query](#search-seconds-per-query) | - | - | "
                           "recorded by hand |")
  logged = history.read_text()
  assert logged.count("## Train step") == 1 and logged.count("## Loss") == 1
  assert logged.index("## Train step") < logged.index("## Loss")


def test_results_md_is_in_the_form_the_record_rewrites():
  with open(common.RESULTS_PATH) as file:
    text = file.read()
  intro, sections = common.split_sections(text)
  assert common.join_sections(intro, sections) == text  # the index lists every section
  titles = [common.section_title(section) for section in sections]
  assert len(titles) == len(set(titles))  # one section per benchmark
  with open(common.HISTORY_PATH) as file:
    logged = set(common.section_title(section) for section in common.split_sections(file.read())[1])
  assert set(titles) <= logged


def test_the_commit_is_marked_for_changes_anywhere_but_the_two_logs(tmp_path, monkeypatch):
  git = lambda *arguments: subprocess.run(["git", "-C", str(tmp_path), *arguments], check=True,
                                          capture_output=True)
  (tmp_path / "benchmarks").mkdir()
  (tmp_path / "clip_jax").mkdir()
  for name in ("benchmarks/RESULTS.md", "benchmarks/HISTORY.md", "clip_jax/model.py"):
    (tmp_path / name).write_text("1\n")
  git("init", "-q")
  git("add", ".")
  git("-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "first")
  monkeypatch.setattr(common, "BENCHMARKS", str(tmp_path / "benchmarks"))
  head = common.commit()
  assert len(head) >= 7 and "uncommitted" not in head
  (tmp_path / "benchmarks/RESULTS.md").write_text("2\n")  # a run recording itself
  (tmp_path / "benchmarks/HISTORY.md").write_text("2\n")
  assert common.commit() == head
  (tmp_path / "clip_jax/model.py").write_text("2\n")  # code outside benchmarks/
  assert common.commit() == head + " with uncommitted changes"
