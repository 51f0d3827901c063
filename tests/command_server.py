"""Runs `python -m <module> ...` and `python -c <code>` commands in processes forked from one that
has already imported TensorFlow, JAX and the library.

Why: the documentation tests run about fifty such commands, and each would spend about 9 seconds
of its life importing (TensorFlow alone 8 s on this machine). Forked from a server that imported
them once, a command starts at once. Python's multiprocessing "forkserver" does the same for
functions, not for command lines.

A command still runs as written, in a process of its own: its argv, working directory,
environment and output are its own, its module runs as __main__ from the first line (the server
imports only modules that define no command-line flags), and the process ends the way an
interpreter does (atexit handlers, non-daemon threads joined, exit status). The server imports
modules only: JAX's backends and TensorFlow's runtime start in the children, after the fork.

Protocol, one JSON object per line: the client sends {"argv", "cwd", "env", "stdout", "stderr"}
(the last two: files); the server answers {"pid"} when the child starts and {"returncode"} when it
ends.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import types

PRELOAD = ("tensorflow", "tensorflow_datasets", "jax", "flax.linen", "optax", "orbax.checkpoint",
           "matplotlib.pyplot", "input_pipeline", "input_pipeline.image_collections",
           "clip_jax.embeddings", "clip_jax.evaluation.evaluators", "clip_jax.pretrained",
           "clip_jax.train_step", "clip_jax.convert")
# Environment variables that a command may set differently from the server's: pytest names the
# running test in one, and the commands' own modules come from the other (see _run_command).
NOT_READ_ON_IMPORT = frozenset({"PYTHONPATH", "PYTEST_CURRENT_TEST"})


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


def serve() -> None:
  """Forks a child for each request on stdin, one at a time, until stdin closes."""
  started_with = dict(os.environ)
  for module in PRELOAD:
    __import__(module)
  # What importing added (clip_jax sets libtpu's variables); a command's process would add it too.
  imported = {key: value for key, value in os.environ.items() if key not in started_with}
  requests, answers = sys.stdin, sys.stdout
  print(json.dumps({"started_with": started_with, "imported": imported}), file=answers,
        flush=True)
  for line in requests:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
      os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
      for descriptor, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), descriptor)
      sys.stdin = open(0, closefd=False)  # pylint: disable=consider-using-with
      _run_command(request["argv"], request["cwd"], {**imported, **request["env"]})
    print(json.dumps({"pid": pid}), file=answers, flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), file=answers, flush=True)


class Client:
  """A server started with this process's environment, for this process's commands."""

  def __init__(self):
    self._server = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    atexit.register(self.close)
    self._received = b""  # Read from the server, not yet answered.
    self._environments = None  # The server's before and after its imports, once it has imported.

  def serves(self, argv: list[str], env: dict[str, str]) -> bool:
    """Whether `argv` (after the interpreter) can run here: `-m` or `-c`, and an environment that
    differs from the server's only in NOT_READ_ON_IMPORT (the rest may be read when modules
    import) and in what the imports themselves set."""
    if self._environments is None:
      self._environments = self._answer(timeout=120)
    started_with, imported = self._environments["started_with"], self._environments["imported"]
    differing = {key for key in {*env, *started_with}
                 if env.get(key) != started_with.get(key)
                 and not (key in imported and env.get(key) == imported[key])}
    return len(argv) >= 2 and argv[0] in ("-m", "-c") and differing <= NOT_READ_ON_IMPORT

  def run(self, argv: list[str], cwd: str, env: dict[str, str], stdout: str, stderr: str,
          timeout: float) -> int:
    """Runs `python *argv` (which `serves`), appending its output to the files `stdout` and
    `stderr` (may be one); its exit status, or -SIGKILL when it ran past `timeout` seconds."""
    assert self.serves(argv, env), argv
    request = {"argv": argv, "cwd": cwd, "env": env, "stdout": stdout, "stderr": stderr}
    self._server.stdin.write(json.dumps(request) + "\n")
    self._server.stdin.flush()
    pid = self._answer(timeout)["pid"]
    try:
      return self._answer(timeout)["returncode"]
    except TimeoutError:
      os.kill(pid, signal.SIGKILL)
      return self._answer(timeout)["returncode"]

  def _answer(self, timeout: float) -> dict:
    """The server's next line. Read from the pipe's descriptor: a buffered reader could hold the
    next answer already, where select() would not see it."""
    while b"\n" not in self._received:
      readable, _, _ = select.select([self._server.stdout], [], [], timeout)
      if not readable:
        raise TimeoutError(f"The command server did not answer in {timeout} s.")
      received = os.read(self._server.stdout.fileno(), 1 << 16)
      if not received:
        raise RuntimeError(f"The command server exited with {self._server.wait()}.")
      self._received += received
    line, self._received = self._received.split(b"\n", 1)
    return json.loads(line)

  def close(self) -> None:
    if self._server.poll() is None:
      self._server.stdin.close()
      self._server.wait()


@functools.cache
def client() -> Client:
  """This process's server, started on first use."""
  return Client()


def run_python(argv: list[str], *, cwd: str | None = None, env: dict[str, str] | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
  """`subprocess.run([sys.executable, *argv], capture_output=True, text=True)`, through this
  process's server where it `serves` the command (a subprocess where not)."""
  cwd = os.path.abspath(cwd or os.getcwd())
  env = dict(os.environ if env is None else env)
  if not client().serves(argv, env):
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
  with tempfile.TemporaryDirectory() as folder:
    paths = [os.path.join(folder, name) for name in ("stdout", "stderr")]
    returncode = client().run(argv, cwd, env, *paths, timeout)
    stdout, stderr = (open(path, errors="replace").read()  # pylint: disable=consider-using-with
                      if os.path.exists(path) else "" for path in paths)
  return subprocess.CompletedProcess([sys.executable, *argv], returncode, stdout, stderr)


if __name__ == "__main__":
  sys.path.pop(0)  # This file's folder (tests/): the commands do not see the tests' modules.
  serve()
