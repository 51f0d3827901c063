"""Weights files made by strangers are data, never code: hostile files made here (a TorchScript
archive and a pickle whose loading would write a marker file, an index naming a shard outside
its directory) are refused with one line naming the file, and nothing of theirs runs."""

import json
import os

import numpy as np
import pytest

import command_server
import doc_commands
from clip_jax import files
from clip_jax.convert import tensor_files

torch = pytest.importorskip("torch")


def documented(message: str) -> str:
  return doc_commands.documented_message("docs/untrusted_files.md", message)


class _MarkerModule(torch.nn.Module):
  """A module whose TorchScript `__setstate__`, which torch.jit.load runs, creates a file."""

  def __init__(self, marker: str):
    super().__init__()
    self.weight = torch.nn.Parameter(torch.zeros(2))
    self.path = marker

  def forward(self, x):
    return x + self.weight

  @torch.jit.export
  def __getstate__(self):
    return (self.weight, self.path, self.training)

  @torch.jit.export
  def __setstate__(self, state: tuple[torch.Tensor, str, bool]):
    self.path, self.training = state[1], state[2]
    touched = torch.from_file(self.path, True, 1, dtype=torch.uint8)  # creates the file
    self.weight = state[0] + touched.float().sum() * 0


def torchscript_payload(path, marker):
  torch.jit.save(torch.jit.script(_MarkerModule(str(marker))), str(path))
  return str(path)


class _Payload:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.mkdir, (self.marker,)


def test_a_torchscript_archive_runs_only_with_trust_code(tmp_path):
  marker = tmp_path / "marker"
  path = torchscript_payload(tmp_path / "pytorch_model.bin", marker)
  with pytest.raises(tensor_files.UntrustedCode, match=(
      rf"^{path} is a TorchScript archive, code that PyTorch runs as it loads, and not one of "
      r"OpenAI's releases \(its SHA-256 [0-9a-f]{64} is not in docs/weights\.md\).*--trust_code")
                     ) as refused:
    tensor_files.read(path)
  documented(str(refused.value))
  with pytest.raises(tensor_files.UntrustedCode):  # in a Hugging Face directory, as in the issue
    tensor_files.read(str(tmp_path))
  assert not marker.exists()
  assert set(tensor_files.read(path, trust_code=True)) == {"weight"}
  assert marker.exists()  # the proof that loading it ran its code


def test_openai_releases_are_recognised_by_their_digest(tmp_path, monkeypatch):
  marker = tmp_path / "marker"
  path = torchscript_payload(tmp_path / "ViT-B-32.pt", marker)
  monkeypatch.setitem(tensor_files.OPENAI_RELEASES, files.sha256(path), "ViT-B-32.pt")
  assert set(tensor_files.read(path)) == {"weight"}
  # The table is docs/weights.md's download links.
  with open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "weights.md")) as file:
    page = file.read()
  for digest, name in tensor_files.OPENAI_RELEASES.items():
    if digest != files.sha256(path):
      assert f"/clip/models/{digest}/{name})" in page, name


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
  marker = tmp_path / "marker"
  path = str(tmp_path / "state_dict.pt")
  torch.save({"weight": torch.zeros(2), "payload": _Payload(str(marker))}, path)
  with pytest.raises(tensor_files.UntrustedCode,
                     match=rf"^{path} is a pickle that holds more than tensors.*\.safetensors\.$"
                     ) as refused:
    tensor_files.read(path)
  documented(str(refused.value))
  assert not marker.exists()
  with open(path, "rb") as file:  # what weights_only=False would have done
    torch.load(file, weights_only=False)
  assert marker.exists()


def test_torch_before_the_fix_is_refused_for_pickles(tmp_path, monkeypatch):
  path = str(tmp_path / "state_dict.pt")
  torch.save({"weight": torch.zeros(2)}, path)
  monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
  with pytest.raises(ImportError, match=r"torch 2\.5\.1\+cpu can be made to run code.*>= 2\.6"
                     ) as refused:
    tensor_files.read(path)
  documented(str(refused.value))


def test_safetensors_come_first_and_index_shards_stay_in_their_directory(tmp_path):
  marker = tmp_path / "marker"
  model = tmp_path / "model"
  model.mkdir()
  torchscript_payload(model / "pytorch_model.bin", marker)
  tensor_files.write_safetensors({"weight": np.ones(2, np.float32)},
                                 str(model / "open_clip_model.safetensors"))
  np.testing.assert_array_equal(tensor_files.read(str(model))["weight"], [1, 1])
  assert not marker.exists()

  sharded = tmp_path / "sharded"
  sharded.mkdir()
  tensor_files.write_safetensors({"secret": np.ones(2, np.float32)},
                                 str(tmp_path / "outside.safetensors"))
  (sharded / "model.safetensors.index.json").write_text(json.dumps(
      {"weight_map": {"secret": "../outside.safetensors"}}))
  with pytest.raises(ValueError, match=r"names the shard '\.\./outside\.safetensors' outside"
                     ) as refused:
    tensor_files.read(str(sharded))
  documented(str(refused.value))


def test_the_command_line_refuses_in_one_line(tmp_path):
  marker = tmp_path / "marker"
  path = torchscript_payload(tmp_path / "ViT-B-32.pt", marker)
  completed = command_server.run_python(
      ["-m", "clip_jax.convert", f"--src={path}", f"--dst={tmp_path / 'out'}"])
  assert completed.returncode != 0 and not marker.exists()
  errors = [line for line in completed.stderr.splitlines() if "TorchScript archive" in line]
  assert len(errors) == 1 and "Traceback" not in completed.stderr, completed.stderr[-2000:]
  assert errors[0].startswith("Error: ") and documented(errors[0].removeprefix("Error: "))
  assert not os.path.exists(tmp_path / "out")
