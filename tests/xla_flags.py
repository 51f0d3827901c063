"""XLA's flags for the test processes and the processes they start."""


def xla_flags(device_count: int) -> str:
  """`device_count` virtual CPU devices, and LLVM's optimisations off: the suite compiles far more
  than it computes (tiny models, a few steps), and compiling at -O0 is about a fifth faster for a
  whole training command (measured), with the same results."""
  return (f"--xla_force_host_platform_device_count={device_count} "
          "--xla_backend_optimization_level=0")
