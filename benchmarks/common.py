"""Shared by the benchmark scripts: the machine's description, and recording a result.

A result goes twice into benchmarks/: appended to HISTORY.md, the dated log of every run, and in
place of the section of the same title in RESULTS.md, which holds the latest table of each
benchmark under an index of them.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
RESULTS_PATH = os.path.join(BENCHMARKS, "RESULTS.md")
HISTORY_PATH = os.path.join(BENCHMARKS, "HISTORY.md")
# RESULTS.md's index of its sections lies between these lines (written by `index`).
INDEX_START, INDEX_END = "<!-- index: written by benchmarks/common.py -->", "<!-- end of index -->"


def repository_path(relative: str) -> str:
  """A file of the repository, e.g. "configs/webdataset.py", wherever the command runs."""
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), relative)


def machine_description() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  processor = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as file:
      names = [line.split(":", 1)[1].strip() for line in file if line.startswith("model name")]
    processor = names[0] if names else processor
  except OSError:
    pass
  devices = jax.devices()
  return (f"{processor}, {os.cpu_count()} cores; jax {jax.__version__} on "
          f"{len(devices)} x {devices[0].device_kind}")


def format_table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
  return "\n".join(lines)


def report(title: str, header: list[str], rows: list[list[str]], notes: str = "",
           record: bool = True) -> None:
  """Prints a benchmark's table and, with `record`, appends it to RESULTS.md."""
  table = format_table(header, rows)
  print(table)
  if record:
    append_results(title, table, notes)


def commit() -> str:
  """The repository's commit, marked when the work tree has changes; "unknown" without git."""
  def git(*arguments):
    return subprocess.run(["git", "-C", BENCHMARKS, *arguments], capture_output=True,
                          text=True, check=False)
  head = git("rev-parse", "--short", "HEAD")
  if head.returncode:
    return "unknown"
  # Pathspecs from the top of the repository: the whole tree's code, less the two logs.
  changed = git("status", "--porcelain", "--", ":(top)", ":(top,exclude)benchmarks/RESULTS.md",
                ":(top,exclude)benchmarks/HISTORY.md").stdout.strip()
  return head.stdout.strip() + (" with uncommitted changes" if changed else "")


def append_results(title: str, table: str, notes: str = "") -> None:
  """Records one dated section (machine, commit, command, table): appended to HISTORY.md, and in
  place of RESULTS.md's section of the same title (or after its last)."""
  module = os.path.splitext(os.path.relpath(sys.argv[0]))[0].replace(os.sep, ".")
  command = " ".join(["python -m", module] + sys.argv[1:])
  section = (f"## {title}\n\n- date: {datetime.date.today().isoformat()}\n"
             f"- commit: {commit()}\n- machine: {machine_description()}\n"
             f"- command: `{command}`\n\n{table}\n")
  if notes:
    section += f"\n{notes}\n"
  with open(HISTORY_PATH, "a") as file:
    file.write("\n" + section)
  with open(RESULTS_PATH) as file:
    intro, sections = split_sections(file.read())
  titles = [section_title(each) for each in sections]
  if title in titles:
    sections[titles.index(title)] = section
  else:
    sections.append(section)
  with open(RESULTS_PATH, "w") as file:
    file.write(join_sections(intro, sections))
  print(f"Appended to {HISTORY_PATH}; {RESULTS_PATH}'s section {title!r} is this run's now")


def split_sections(text: str) -> tuple[str, list[str]]:
  """(what precedes the first "## " heading, each section from its heading on)."""
  parts = re.split(r"^(?=## )", text, flags=re.MULTILINE)
  return parts[0], [part.rstrip("\n") + "\n" for part in parts[1:]]


def section_title(section: str) -> str:
  return section.splitlines()[0][3:].strip()


def join_sections(intro: str, sections: list[str]) -> str:
  """RESULTS.md of `intro` (its index rewritten for `sections`) and the sections."""
  start, end = intro.index(INDEX_START), intro.index(INDEX_END) + len(INDEX_END)
  intro = intro[:start] + index(sections) + intro[end:]
  return intro.rstrip("\n") + "\n\n" + "\n".join(sections)


def index(sections: list[str]) -> str:
  """A table of the sections: title (linked), date, commit and command."""
  def field(section, name, default="-"):
    found = re.search(rf"^- {name}: (.*)$", section, flags=re.MULTILINE)
    return found.group(1).strip() if found else default

  rows = []
  for section in sections:
    title = section_title(section)
    anchor = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
    command = field(section, "command", "recorded by hand")
    if command.count("`") % 2:  # A command that goes on over lines: the section has it whole.
      command = "see the section"
    rows.append([f"[{title.replace('|', '/')}](#{anchor})", field(section, "date"),
                 field(section, "commit"), command.replace("|", "\\|")])
  return "\n".join([INDEX_START, format_table(["benchmark", "date", "commit", "command"], rows),
                    INDEX_END])
