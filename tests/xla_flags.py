"""XLA's flags for the test processes and the processes they start."""


def xla_flags(device_count: int, optimized: bool = False) -> str:
  """`device_count` virtual CPU devices, and LLVM's optimisations off unless `optimized`: the
  suite compiles far more than it computes (tiny models, a few steps), and compiling at -O0 is
  about a fifth faster for a whole training command (measured), with the same results. A command
  that trains for many steps is `optimized`: -O0's code runs slower than its compile time saves
  (a step of the scaling sweep's smallest run: 207 ms against 74, compiled in 7.0 s against
  10.1)."""
  flags = f"--xla_force_host_platform_device_count={device_count}"
  return flags if optimized else f"{flags} --xla_backend_optimization_level=0"
