"""TensorFlow stays off the accelerators and out of what the programs print
(clip_jax.host_tensorflow).

Each check runs in a fresh interpreter: what is tested is what happens when a process first
imports the data pipeline, which this test process did long ago.
"""

import subprocess
import sys
import textwrap

# Records TensorFlow's calls to set its visible devices, imports the pipeline, then forks: the
# child (as the tests' command server and tf.data users fork after importing) builds and reads a
# parallel tf.data pipeline, which hangs or crashes a child forked from a process whose
# TensorFlow runtime had started its thread pools.
RECORD_AND_FORK = textwrap.dedent("""
    import os, sys
    import tensorflow as tf
    calls = []
    set_visible_devices = tf.config.set_visible_devices
    def recording(devices, device_type=None):
      calls.append((list(devices), device_type))
      return set_visible_devices(devices, device_type)
    tf.config.set_visible_devices = recording
    import input_pipeline
    print("calls", sorted(calls, key=str))
    pid = os.fork()
    if pid == 0:
      dataset = tf.data.Dataset.range(64).map(lambda x: x * 2, num_parallel_calls=4).batch(8)
      total = sum(int(batch.sum()) for batch in dataset.as_numpy_iterator())
      kinds = sorted({device.device_type for device in tf.config.get_visible_devices()})
      print("child", total, kinds, flush=True)
      os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("child status", status)
""")


def run_python(code: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                        check=False)


def test_the_pipeline_hides_the_accelerators_from_tensorflow_and_forks_safely():
  result = run_python(RECORD_AND_FORK)
  assert result.returncode == 0, result.stderr
  assert "calls [([], 'GPU'), ([], 'TPU')]" in result.stdout, result.stdout
  assert "child 4032 ['CPU']" in result.stdout, result.stdout + result.stderr
  assert "child status 0" in result.stdout


def test_importing_the_pipeline_prints_none_of_tensorflows_start_up_lines():
  """On a machine without a GPU, the full TensorFlow's import prints "Could not find cuda drivers"
  and its first look at the devices "failed call to cuInit"."""
  result = run_python("import input_pipeline, clip_jax.metrics; print('imported')")
  assert result.returncode == 0, result.stderr
  assert result.stdout == "imported\n"
  assert result.stderr == "", result.stderr
