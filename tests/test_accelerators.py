"""clip_jax.accelerators: each card's own peak figures, and TPU chips told from other Google PCI
devices."""

import pytest

from clip_jax import accelerators


@pytest.mark.parametrize("device_kind, name, peak_tflops, bandwidth_tb_s", [
    ("NVIDIA H100 80GB HBM3", "H100", 989, 3.35),  # SXM
    ("NVIDIA H100 PCIe", "H100-PCIe", 756, 2.0),
    ("NVIDIA H100 NVL", "H100-NVL", 835, 3.9),
    ("NVIDIA H200", "H200", 989, 4.8),
    ("NVIDIA H200 NVL", "H200-NVL", 835, 4.8),
    ("TPU v5 lite", "v5e", 197, 0.819),
    ("TPU v5", "v5p", 459, 2.765),
])
def test_each_card_gets_its_own_peak(device_kind, name, peak_tflops, bandwidth_tb_s):
  chip = accelerators.chip_of(device_kind)
  assert chip.name == name
  assert chip.peak_bf16_flops == pytest.approx(peak_tflops * 1e12)
  assert chip.hbm_bytes_per_s == pytest.approx(bandwidth_tb_s * 1e12)


def test_an_unknown_h100_variant_gets_no_peak_rather_than_the_sxm_one():
  assert accelerators.chip_of("NVIDIA H100 SXM5 96GB") is None
  assert accelerators.chip_of("cpu") is None


def fake_pci_devices(root, devices: dict[str, tuple[str, str]]) -> str:
  """A /sys/bus/pci/devices of `devices`: address -> (vendor, device)."""
  for address, (vendor, device) in devices.items():
    (root / address).mkdir(parents=True)
    (root / address / "vendor").write_text(vendor + "\n")
    (root / address / "device").write_text(device + "\n")
  return str(root)


def test_a_google_virtual_nic_is_not_a_tpu(tmp_path):
  gvnic = {"0000:00:04.0": ("0x1ae0", "0x0042")}
  nvidia = {"0000:00:05.0": ("0x10de", "0x0063")}  # a TPU's device ID, of another vendor
  assert not accelerators.has_tpu_chips(fake_pci_devices(tmp_path / "vm", {**gvnic, **nvidia}))
  tpu_vm = {**gvnic, "0000:00:06.0": ("0x1ae0", "0x0063")}  # a TPU v5e chip
  assert accelerators.has_tpu_chips(fake_pci_devices(tmp_path / "tpu_vm", tpu_vm))
