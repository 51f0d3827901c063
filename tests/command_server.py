"""Runs `python -m <module> ...` and `python -c <code>` commands in processes forked from one that
has already imported TensorFlow, JAX and the library.

Why: the tests run about a hundred such commands, and each would spend about 9 seconds of its
life importing (TensorFlow alone 8 s on this machine). Forked from a server that imported them
once, a command starts at once. Python's multiprocessing "forkserver" does the same for
functions, not for command lines.

A command still runs as written, in a process of its own: its argv, working directory,
environment and output are its own, its module runs as __main__ from the first line (the server
imports only modules that define no command-line flags), and the process ends the way an
interpreter does (atexit handlers, non-daemon threads joined, exit status). The server imports
modules only: JAX's backends and TensorFlow's runtime start in the children, after the fork.
Modules may read the environment when they import, so a server serves only commands whose
environment is the one it started with (but for NOT_READ_ON_IMPORT): each environment gets a
server of its own. A server runs any number of commands at once (the processes of a
multi-process run).

Protocol, one JSON object per line: the client sends {"id", "argv", "cwd", "env", "stdout",
"stderr"} (the last two: files); the server answers {"id", "pid"} when the child starts and
{"id", "returncode"} when it ends.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import time
import types

if __name__ != "__main__":
  # What the library's import sets in the environment (libtpu's variables) is set here before
  # any test copies the environment for its commands: otherwise a test process's environment
  # would differ before and after its first import of the library, and need a second server.
  import clip_jax  # noqa: F401  # pylint: disable=unused-import,g-import-not-at-top

PRELOAD = ("tensorflow", "tensorflow_datasets", "jax", "flax.linen", "optax", "orbax.checkpoint",
           "matplotlib.pyplot", "input_pipeline", "input_pipeline.image_collections",
           "clip_jax.embeddings", "clip_jax.evaluation.evaluators", "clip_jax.pretrained",
           "clip_jax.train_step", "clip_jax.convert")
# Environment variables that a command may set differently from its server's, as nothing the
# server imports reads them: pytest names the running test in one; the commands' own modules come
# from another (see _run_command); XLA reads its flags (the number of CPU devices) when a backend
# starts, in the child; huggingface_hub reads its cache's place when its settings module is first
# imported, in the child. serve() checks the last two, so that the tests' several device counts
# and hub caches share one server instead of importing one each.
NOT_READ_ON_IMPORT = frozenset({"PYTHONPATH", "PYTEST_CURRENT_TEST", "XLA_FLAGS", "HF_HUB_CACHE",
                                "HF_HUB_OFFLINE"})
# Servers kept per test process, each about 1 GB; the least recently used one idle goes first.
MAX_SERVERS = 3
# How long a server may take to import and start a command (a loaded machine imports slowly).
START_TIMEOUT_SECONDS = 300


def _run_command(argv: list[str], cwd: str, env: dict[str, str]) -> None:
  """In the child: becomes `python *argv` started in `cwd` with `env`. Returns only by raising
  (SystemExit or the command's exception), which ends the child like an interpreter."""
  os.chdir(cwd)
  os.environ.clear()
  os.environ.update(env)
  # sys.path as `python -m`/`-c` would have it: the working directory, then PYTHONPATH.
  pythonpath = [path for path in env.get("PYTHONPATH", "").split(os.pathsep) if path]
  sys.path[:] = [cwd, *pythonpath, *[path for path in sys.path[1:] if path not in pythonpath]]
  main = types.ModuleType("__main__")
  sys.modules["__main__"] = main
  if argv[0] == "-m":
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
  else:
    sys.argv = ["-c", *argv[2:]]
    exec(compile(argv[1], "<string>", "exec"), main.__dict__)  # pylint: disable=exec-used
  raise SystemExit(0)


def _start_child(request: dict, imported: dict[str, str]) -> int:
  """Forks the process of one request; in the child, never returns."""
  pid = os.fork()
  if pid == 0:
    # The server's pipes are replaced, so that only the server answers the client.
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for descriptor, path in ((1, request["stdout"]), (2, request["stderr"])):
      os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), descriptor)
    sys.stdin = open(0, closefd=False)  # pylint: disable=consider-using-with
    _run_command(request["argv"], request["cwd"], {**imported, **request["env"]})
  return pid


def _check_nothing_read_yet() -> None:
  """What NOT_READ_ON_IMPORT relies on: no XLA backend has started and huggingface_hub's
  settings are not imported, so each command reads its own XLA_FLAGS and HF_HUB_*."""
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  if xla_bridge.backends_are_initialized() or "huggingface_hub.constants" in sys.modules:
    raise RuntimeError("The command server's imports started an XLA backend or read "
                       "huggingface_hub's settings: commands would not get their own XLA_FLAGS "
                       "or HF_HUB_*; take them out of NOT_READ_ON_IMPORT or the import out of "
                       "PRELOAD.")


def serve() -> None:
  """Forks a child for each request on stdin, and reports each child's end, until stdin closes
  and the last child has ended."""
  started_with = dict(os.environ)
  for module in PRELOAD:
    __import__(module)
  _check_nothing_read_yet()
  # What importing added (clip_jax sets libtpu's variables); a command's process would add it too.
  imported = {key: value for key, value in os.environ.items() if key not in started_with}

  def answer(message: dict) -> None:
    # One write of a short line: atomic on a pipe, and no Python-level lock for a fork to copy.
    os.write(1, (json.dumps(message) + "\n").encode())

  children = {}  # pid -> request id
  received, reading = b"", True
  while reading or children:
    # While children run, wake up now and then to see which have ended.
    readable, _, _ = select.select([0] if reading else [], [], [], 0.05 if children else None)
    if readable:
      data = os.read(0, 1 << 16)
      reading = bool(data)
      received += data
      while b"\n" in received:
        line, received = received.split(b"\n", 1)
        request = json.loads(line)
        pid = _start_child(request, imported)
        children[pid] = request["id"]
        answer({"id": request["id"], "pid": pid})
    while children:
      pid, status = os.waitpid(-1, os.WNOHANG)
      if pid == 0:
        break
      answer({"id": children.pop(pid), "returncode": os.waitstatus_to_exitcode(status)})


class ServedProcess:
  """A command a server runs, with the part of subprocess.Popen's interface the tests use."""

  def __init__(self, server: Server, request_id: int, args: list[str]):
    self._server, self._id, self.args = server, request_id, args
    self.pid = server.answer(request_id, "pid", START_TIMEOUT_SECONDS)
    self.returncode = None

  def poll(self) -> int | None:
    if self.returncode is None:
      self.returncode = self._server.answer(self._id, "returncode", timeout=0)
    return self.returncode

  def wait(self, timeout: float | None = None) -> int:
    if self.returncode is None:
      self.returncode = self._server.answer(self._id, "returncode", timeout)
      if self.returncode is None:
        raise subprocess.TimeoutExpired(self.args, timeout)
    return self.returncode

  def send_signal(self, number: int) -> None:
    if self.poll() is None:
      os.kill(self.pid, number)

  def terminate(self) -> None:
    self.send_signal(signal.SIGTERM)

  def kill(self) -> None:
    self.send_signal(signal.SIGKILL)


class Server:
  """A server started with one environment, for this process's commands with that environment."""

  def __init__(self, environment: dict[str, str]):
    self._process = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, env=environment)
    self._received = b""  # Read from the server, not yet parsed.
    self._answers = collections.defaultdict(dict)  # request id -> what the server answered
    self._ids = itertools.count()
    self.running = set()  # ids of the commands not known to have ended

  def start(self, argv: list[str], cwd: str, env: dict[str, str], stdout: str,
            stderr: str) -> ServedProcess:
    """Starts `python *argv`, appending its output to the files `stdout` and `stderr` (may be
    one)."""
    request_id = next(self._ids)
    request = {"id": request_id, "argv": argv, "cwd": cwd, "env": env, "stdout": stdout,
               "stderr": stderr}
    self._process.stdin.write((json.dumps(request) + "\n").encode())
    self._process.stdin.flush()
    self.running.add(request_id)
    return ServedProcess(self, request_id, [sys.executable, *argv])

  def answer(self, request_id: int, key: str, timeout: float | None):
    """The server's answer `key` about a request, waiting up to `timeout` seconds for it (None:
    for ever); None if it has not come."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while key not in self._answers[request_id]:
      remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
      if not self._read(remaining) and remaining is not None and remaining <= 0:
        return None
    if key == "returncode":
      self.running.discard(request_id)
    return self._answers[request_id][key]

  def _read(self, timeout: float | None) -> bool:
    """Reads what the server has sent within `timeout` seconds; whether anything came. Reads the
    pipe's descriptor: a buffered reader could hold answers already, where select() would not
    see them."""
    readable, _, _ = select.select([self._process.stdout], [], [], timeout)
    if not readable:
      return False
    received = os.read(self._process.stdout.fileno(), 1 << 16)
    if not received:
      raise RuntimeError(f"The command server exited with {self._process.wait()}.")
    self._received += received
    *lines, self._received = self._received.split(b"\n")
    for line in lines:
      message = json.loads(line)
      self._answers[message.pop("id")].update(message)
    return True

  def close(self) -> None:
    """Lets the server end once its running commands have."""
    if self._process.poll() is None:
      self._process.stdin.close()
      self._process.wait()


_servers: collections.OrderedDict[tuple, Server] = collections.OrderedDict()


def _key(env: dict[str, str]) -> tuple:
  return tuple(sorted((key, value) for key, value in env.items() if key not in NOT_READ_ON_IMPORT))


def server(env: dict[str, str]) -> Server:
  """The server for commands with environment `env`, started (it imports in the background)
  if there is none yet."""
  key = _key(env)
  if key not in _servers:
    for old_key, old in list(_servers.items()):
      if len(_servers) < MAX_SERVERS:
        break
      if not old.running:
        old.close()
        del _servers[old_key]
    _servers[key] = Server(dict(key))
  _servers.move_to_end(key)
  return _servers[key]


@atexit.register
def _close_servers() -> None:
  for each in _servers.values():
    each.close()


def served(argv: list[str]) -> bool:
  return len(argv) >= 2 and argv[0] in ("-m", "-c")


def start(argv: list[str], *, stdout: str, stderr: str | None = None, cwd: str | None = None,
          env: dict[str, str] | None = None) -> ServedProcess | subprocess.Popen:
  """`subprocess.Popen([sys.executable, *argv])` with its output appended to the file `stdout`
  (and `stderr`, by default the same file), through the server of its environment where the
  command is `-m` or `-c` (a subprocess where not)."""
  cwd = os.path.abspath(cwd or os.getcwd())
  env = dict(os.environ if env is None else env)
  stderr = stderr or stdout
  if served(argv):
    return server(env).start(argv, cwd, env, stdout, stderr)
  with open(stdout, "a") as out, open(stderr, "a") as err:
    return subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, stdout=out, stderr=err)


def run_python(argv: list[str], *, cwd: str | None = None, env: dict[str, str] | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
  """`subprocess.run([sys.executable, *argv], capture_output=True, text=True)`, through the
  server of its environment (see `start`); a command past `timeout` seconds is killed."""
  with tempfile.TemporaryDirectory() as folder:
    paths = [os.path.join(folder, name) for name in ("stdout", "stderr")]
    process = start(argv, stdout=paths[0], stderr=paths[1], cwd=cwd, env=env)
    try:
      process.wait(timeout)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
    stdout, stderr = (open(path, errors="replace").read()  # pylint: disable=consider-using-with
                      if os.path.exists(path) else "" for path in paths)
  return subprocess.CompletedProcess([sys.executable, *argv], process.returncode, stdout, stderr)


if __name__ == "__main__":
  sys.path.pop(0)  # This file's folder (tests/): the commands do not see the tests' modules.
  serve()
