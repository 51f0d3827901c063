"""Shared by the benchmark scripts: the machine's description and appending to RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import sys

RESULTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


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


def append_results(title: str, table: str, notes: str = "") -> None:
  """Appends one dated section (machine, command, table) to benchmarks/RESULTS.md."""
  module = os.path.splitext(os.path.relpath(sys.argv[0]))[0].replace(os.sep, ".")
  command = " ".join(["python -m", module] + sys.argv[1:])
  section = (f"\n## {title}\n\n- date: {datetime.date.today().isoformat()}\n"
             f"- machine: {machine_description()}\n- command: `{command}`\n\n{table}\n")
  if notes:
    section += f"\n{notes}\n"
  with open(RESULTS_PATH, "a") as file:
    file.write(section)
  print(f"Appended to {RESULTS_PATH}")
