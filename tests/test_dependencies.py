"""setup.cfg's python_requires agrees with the dependencies' own: the oldest Python that every
installed dependency (and theirs, all the way down) accepts, read from their metadata. Otherwise
`pip install` fails on a Python the package claims to support (3.10, on the TPU VM images and
Ubuntu 22.04 hosts, against jax's wheels)."""

import configparser
import importlib.metadata
import os
import subprocess

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPOSITORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
SETUP_CFG = os.path.join(REPOSITORY, "setup.cfg")
PYTHON_MINORS = [f"3.{minor}" for minor in range(8, 16)]


def read_setup_cfg() -> tuple[SpecifierSet, list[Requirement]]:
  config = configparser.ConfigParser()
  config.read(SETUP_CFG)
  options = config["options"]
  lines = (line.split("#")[0].strip() for line in options["install_requires"].splitlines())
  return SpecifierSet(options["python_requires"]), [Requirement(line) for line in lines if line]


def requires_python_of_every_dependency(requirements: list[Requirement]) -> dict[str, SpecifierSet]:
  """Distribution name -> its Requires-Python, for the requirements and what they require."""
  found, pending = {}, list(requirements)
  while pending:
    requirement = pending.pop()
    name = canonicalize_name(requirement.name)
    if name in found or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
      continue
    distribution = importlib.metadata.distribution(name)  # Raises if it is not installed.
    found[name] = SpecifierSet(distribution.metadata.get("Requires-Python") or "")
    pending += [Requirement(line) for line in distribution.requires or ()]
  return found


def oldest_python_accepted_by_all(requires_python: dict[str, SpecifierSet]) -> str:
  return next(minor for minor in PYTHON_MINORS
              if all(specifier.contains(minor) for specifier in requires_python.values()))


def python_requires_floor(python_requires: SpecifierSet) -> str:
  return next(minor for minor in PYTHON_MINORS if python_requires.contains(minor))


def test_python_requires_is_the_oldest_python_every_dependency_accepts():
  python_requires, requirements = read_setup_cfg()
  requires_python = requires_python_of_every_dependency(requirements)
  assert {"jax", "jaxlib", "flax", "tensorflow"} <= set(requires_python)
  oldest = oldest_python_accepted_by_all(requires_python)
  refusing = sorted(name for name, specifier in requires_python.items()
                    if not specifier.contains(python_requires_floor(python_requires)))
  assert python_requires_floor(python_requires) == oldest, (python_requires, oldest, refusing)


def test_a_claim_older_than_a_dependency_accepts_is_caught():
  requires_python = {"jax": SpecifierSet(">=3.11"), "numpy": SpecifierSet(">=3.10")}
  assert oldest_python_accepted_by_all(requires_python) == "3.11"
  assert python_requires_floor(SpecifierSet(">=3.10")) != "3.11"


def test_make_refuses_a_python_older_than_python_requires_in_one_line(tmp_path):
  """Before it creates a virtual environment, with a stand-in interpreter that is Python 3.10."""
  old_python = tmp_path / "python3.10"
  old_python.write_text('#!/bin/sh\n[ "$1" = -V ] && echo "Python 3.10.12" && exit 0\nexit 1\n')
  old_python.chmod(0o755)
  command = ["make", "--no-print-directory", "-C", REPOSITORY, "install", f"PYTHON={old_python}",
             f"VENV={tmp_path / 'venv'}"]
  result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode != 0
  (message,) = result.stdout.splitlines()
  assert message.startswith("clip_jax needs Python 3.11 or later;") and "3.10.12" in message
  assert not (tmp_path / "venv").exists()
