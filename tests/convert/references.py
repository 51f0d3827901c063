"""The PyTorch reference implementations, loaded without the packages' heavy imports.

open_clip's package imports torchvision (its transforms); its model code does not use it, bar
one name in utils.py. `open_clip_model()` imports `open_clip.model` under an empty `open_clip`
package with that one torchvision name stubbed. OpenAI's `clip/model.py` (PyPI: clip-anytorch)
imports only torch and is loaded as a single file. Tests skip, naming what to install, when a
reference is missing; CI installs the `test` extra, so there they run.
"""

import importlib.machinery
import importlib.metadata
import importlib.util
import sys
import types

import numpy as np
import pytest


def _distribution_file(distribution: str, path: str):
  try:
    return distribution, importlib.metadata.distribution(distribution).locate_file(path)
  except importlib.metadata.PackageNotFoundError:
    pytest.skip(f"{distribution} is not installed (`make install` adds it): no reference.")


def open_clip_model():
  """open_clip's `open_clip.model` module (CLIP, with open_clip's Transformer and ResNet)."""
  pytest.importorskip("torch")
  if "open_clip.model" in sys.modules:
    return sys.modules["open_clip.model"]
  _, root = _distribution_file("open_clip_torch", "open_clip")
  package = types.ModuleType("open_clip")
  package.__path__ = [str(root)]
  sys.modules.setdefault("open_clip", package)
  if importlib.util.find_spec("torchvision") is not None:
    return importlib.import_module("open_clip.model")
  # transformers (imported by open_clip's hf_model) must see that torchvision is missing.
  if importlib.util.find_spec("transformers") is not None:
    importlib.import_module("transformers")
  # utils.py imports FrozenBatchNorm2d, used only to freeze a model, which no test does; the
  # stand-in is there only while open_clip's modules are imported.
  stubs = {name: types.ModuleType(name)
           for name in ("torchvision", "torchvision.ops", "torchvision.ops.misc")}
  for name, module in stubs.items():
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
  stubs["torchvision.ops.misc"].FrozenBatchNorm2d = type("FrozenBatchNorm2d", (), {})
  sys.modules.update(stubs)
  try:
    return importlib.import_module("open_clip.model")
  finally:
    for name in stubs:
      del sys.modules[name]


def openai_clip_model():
  """OpenAI's `clip/model.py`: CLIP, VisionTransformer, ModifiedResNet, build_model."""
  pytest.importorskip("torch")
  _, path = _distribution_file("clip-anytorch", "clip/model.py")
  spec = importlib.util.spec_from_file_location("openai_clip_model", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def perturb_(model, seed: int = 0):
  """Every float parameter and buffer plus noise, BatchNorm variances positive: no parameter
  left at an initial zero or one, where a wrong mapping would go unseen."""
  import torch  # pylint: disable=g-import-not-at-top
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, tensor in model.state_dict().items():
      if not tensor.is_floating_point():
        continue
      noise = torch.randn(tensor.shape, generator=generator) * 0.05
      if name.endswith("running_var"):
        tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
      elif name.endswith("logit_scale"):
        tensor.fill_(np.log(1 / 0.07))
      else:
        tensor.add_(noise)
  return model.eval()
