"""A workdir belongs to one run: an exclusive lock while a program writes into it, and a resume
only with the settings the workdir was started with.

The lock is a small JSON file (LOCK.json: host, process, command, start) that its holder renews
every HEARTBEAT_SECONDS. A lock is stale, and taken over with a warning, when its process is gone
from this host or its holder has not renewed it for STALE_SECONDS (a machine that vanished); any
other lock refuses the workdir, unless the program is told to break it. On a local file system
the lock is created atomically (O_EXCL). A bucket (gs://) has no such operation through the file
layers used here: the lock is written, then read back after a moment, so that of two starts at
the same moment at most one, in practice, goes on; a lock on a bucket guards against an operator's
mistake, not against a race of schedulers.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from absl import flags
from absl import logging

from clip_jax import files

LOCK = "LOCK.json"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 180.0
_REMOTE_SETTLE_SECONDS = 2.0  # a bucket: how long a new lock stands before it is read back

# Settings a resumed run may change (docs/training.md): how long it runs, what it logs, evaluates
# and keeps, and how it is spread over devices and hosts. Any other change would make one run of
# two, and is refused.
RESUMABLE = ("total_steps", "log_every_steps", "nonfinite", "max_consecutive_skips",
             "accumulation_steps", "evals",
             "checkpoint", "mesh", "distributed", "data.webdataset.max_member_bytes",
             "data.max_image_pixels")


class WorkdirBusy(RuntimeError):
  """Another run holds the workdir."""


def define_break_lock_flag(folder: str) -> flags.FlagHolder[bool]:
  """--break_lock, for the programs that hold a folder's lock."""
  return flags.DEFINE_bool(
      "break_lock", False, f"Take the {folder}'s lock although its holder may still run: only "
      "when that process is certainly gone (a machine that vanished).")


class Lock:
  """The exclusive lock of a folder (a workdir, an output folder): `acquire`, then `release`;
  renewed by a daemon thread in between."""

  def __init__(self, directory: str, *, break_lock: bool = False):
    self.directory = directory
    self._path = files.path(directory) / LOCK
    self._break_lock = break_lock
    self._holder: dict[str, Any] = {}
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def acquire(self) -> None:
    """Takes the lock, or raises WorkdirBusy naming its holder and what to do."""
    self._path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    self._holder = {"host": socket.gethostname(), "pid": os.getpid(),
                    "command": " ".join(sys.argv), "started": now, "renewed": now}
    if not self._create():
      held = _read(self._path)
      why_free = "it could not be read" if held is None else _stale(held)
      if why_free is None and not self._break_lock:
        raise WorkdirBusy(
            f"{self.directory} is in use by process {held.get('pid')} on {held.get('host')} "
            f"(`{held.get('command')}`, lock renewed {time.time() - held.get('renewed', 0):.0f} s "
            "ago): wait for it to end or use another folder; if that process no longer runs, "
            "pass --break_lock.")
      logging.warning("%s: taking over the lock of %s (%s).", self.directory, held,
                      why_free or "--break_lock")
      self._path.unlink(missing_ok=True)
      if not self._create():
        raise WorkdirBusy(f"{self.directory}: another process took the lock at the same moment; "
                          "try again.")
    self._thread = threading.Thread(target=self._renew, daemon=True, name="workdir-lock")
    self._thread.start()

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self._is_ours():
      self._path.unlink(missing_ok=True)

  def __enter__(self) -> "Lock":
    self.acquire()
    return self

  def __exit__(self, *exception) -> None:
    self.release()

  def _create(self) -> bool:
    """Writes the lock if there is none; whether it is ours."""
    content = json.dumps(self._holder).encode()
    if files.is_remote(self.directory):
      if self._path.exists():
        return False
      self._path.write_bytes(content)
      time.sleep(_REMOTE_SETTLE_SECONDS)
      return self._is_ours()
    try:
      descriptor = os.open(os.fspath(self._path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(descriptor, "wb") as file:
      file.write(content)
      file.flush()
      os.fsync(file.fileno())
    return True

  def _is_ours(self) -> bool:
    held = _read(self._path)
    return held is not None and all(held.get(key) == self._holder[key]
                                    for key in ("host", "pid", "started"))

  def _renew(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      if not self._is_ours():
        logging.error("%s: the lock was taken over by %s; this run no longer holds it.",
                      self.directory, _read(self._path))
        return
      self._holder["renewed"] = time.time()
      files.write_text(self._path, json.dumps(self._holder))


def _read(path) -> dict[str, Any] | None:
  try:
    held = json.loads(path.read_text())
  except (OSError, ValueError):
    return None
  return held if isinstance(held, dict) else None


def _stale(held: Mapping[str, Any]) -> str | None:
  """Why a lock's holder is certainly gone, or None if it may still run."""
  if held.get("host") == socket.gethostname() and not _process_runs(held.get("pid")):
    return f"process {held.get('pid')} no longer runs on this host"
  silent = time.time() - float(held.get("renewed", 0))
  if silent > STALE_SECONDS:
    return f"not renewed for {silent:.0f} s"
  return None


def _process_runs(pid: Any) -> bool:
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return True


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in config.items():
    if isinstance(value, Mapping) and value:
      flat.update(_flat(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


class SettingsChanged(ValueError):
  """A resume with other settings or inputs than the folder's run: it would make one run of two."""


def check_resume(record: str | os.PathLike, given: Mapping[str, Any], *,
                 may_change: Sequence[str] = (), remedy: str,
                 upgrade: Callable[[dict[str, Any]], dict[str, Any]] = lambda stored: stored
                 ) -> dict[str, Any] | None:
  """The run recorded in `record` (a JSON file: a workdir's config.json, a tool's manifest), or
  None if there is none yet; SettingsChanged if `given` differs from it in anything but the keys
  of `may_change` (and their sub-keys), naming each difference, then saying `remedy`. Only the
  top-level keys of `given` are compared: a record may also hold results (totals, a threshold)."""
  path = files.path(record)
  if not path.exists():
    return None
  try:
    stored = json.loads(path.read_text())
  except ValueError as error:
    raise SettingsChanged(f"{path} is not valid JSON ({error}): it holds the settings of the "
                          "files beside it; restore it, or remove it to resume with these "
                          "settings.") from None
  stored = json.loads(json.dumps(upgrade(stored)))  # an older layout in today's, as JSON holds it
  given = json.loads(json.dumps(given))  # as the record would hold it: tuples are lists
  changes = _changes({key: stored.get(key) for key in given}, given, may_change)
  if changes:
    raise SettingsChanged(f"{path.parent} holds a run with other settings, which resuming would "
                          f"mix into one run: {'; '.join(changes)}. {remedy}")
  return stored


def _changes(stored: Mapping[str, Any], given: Mapping[str, Any],
             may_change: Sequence[str]) -> list[str]:
  """Each difference but those under `may_change`, as 'key: stored -> given' (keys flattened)."""
  before, after = _flat(stored), _flat(given)
  changed = []
  for key in sorted(set(before) | set(after)):
    if any(key == allowed or key.startswith(allowed + ".") for allowed in may_change):
      continue
    if before.get(key) != after.get(key):
      changed.append(f"{key}: {before.get(key)!r} -> {after.get(key)!r}")
  return changed
