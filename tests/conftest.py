"""Runs every test on 8 virtual CPU devices, so that sharding is exercised on one machine."""
import os

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# The CPU backend only: libtpu (the test extra, for the TPU compiles of tests/test_plan.py, which
# need no TPU backend) would otherwise start in every process and subprocess, to find no TPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tf.data only; keep TensorFlow off accelerators.
