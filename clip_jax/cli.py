"""What the command-line programs share when they refuse their input."""

from __future__ import annotations

import sys
from typing import NoReturn


def refuse(error: Exception) -> NoReturn:
  """Ends a program whose input (a file, a workdir) was refused: the error's message on one line
  of stderr, without a traceback or the flags' help (the flags were fine), and exit status 1."""
  sys.stderr.write(f"Error: {error}\n")
  sys.exit(1)
