"""benchmarks/common.py's record of a run: the dated log grows, RESULTS.md keeps one current
section per benchmark under an index of them."""

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
