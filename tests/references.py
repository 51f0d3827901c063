"""The references the parity tests compare with, and the helpers they share: the PyTorch
implementations loaded without the packages' heavy imports, inputs and comparisons, and
SentencePiece models trained for the tokenizer tests.

open_clip's package and timm import torchvision (transforms, datasets) at module level; their
model code does not use it. `open_clip_model()` imports `open_clip.model` under an empty
`open_clip` package, with torchvision's names answered by stand-ins while it imports. OpenAI's
`clip/model.py` (PyPI: clip-anytorch) imports only torch and is loaded as a single file. Tests
skip, naming what to install, when a reference is missing; CI installs the `test` extra, so there
they run.
"""

import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import math
import json
import random
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from clip_jax.models import clip as clip_model


def _distribution_file(distribution: str, path: str):
  try:
    return distribution, importlib.metadata.distribution(distribution).locate_file(path)
  except importlib.metadata.PackageNotFoundError:
    pytest.skip(f"{distribution} is not installed (`make install` adds it): no reference.")


class _Anything(type):
  """A stand-in class whose every attribute is a name (enum members used as dict keys)."""

  def __getattr__(cls, name):
    if name.startswith("__"):
      raise AttributeError(name)
    return f"{cls.__name__}.{name}"


class _StandInModule(types.ModuleType):
  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    setattr(self, name, _Anything(name, (), {}))
    return getattr(self, name)


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Imports of torchvision and its submodules, answered with modules of stand-in names."""

  def find_spec(self, name, path, target=None):
    if name == "torchvision" or name.startswith("torchvision."):
      return importlib.machinery.ModuleSpec(name, self, is_package=True)
    return None

  def create_module(self, spec):
    module = _StandInModule(spec.name)
    module.__path__ = []
    return module

  def exec_module(self, module):
    pass


def open_clip_model():
  """open_clip's `open_clip.model` module (CLIP, CustomTextCLIP, with open_clip's Transformer and
  ResNet, and timm's towers where timm is installed)."""
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
  # open_clip and timm import torchvision's transforms, datasets and a BatchNorm variant at
  # module level; no model the tests build calls them. The stand-ins answer those imports only
  # while open_clip's and timm's modules are imported.
  finder = _TorchvisionStandIn()
  sys.meta_path.insert(0, finder)
  try:
    if importlib.util.find_spec("timm") is not None:
      importlib.import_module("timm")
    return importlib.import_module("open_clip.model")
  finally:
    sys.meta_path.remove(finder)
    for name in [name for name in sys.modules
                 if name == "torchvision" or name.startswith("torchvision.")]:
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


TOLERANCE = 1e-4  # float32, relative to the largest magnitude


def inputs(image_size, context_length, vocab_size, count=3, seed=0):
  """Standardised-looking images NHWC and token rows ending at their largest id at various
  positions, padded with zeros."""
  rng = np.random.default_rng(seed)
  images = rng.standard_normal((count, image_size, image_size, 3)).astype(np.float32)
  tokens = rng.integers(1, vocab_size - 2, (count, context_length))
  for row, end in enumerate(np.linspace(1, context_length - 1, count).astype(int)):
    tokens[row, end], tokens[row, end + 1:] = vocab_size - 1, 0
  return images, tokens.astype(np.int32)


def model_inputs(config, seed=0):
  """`inputs` for a clip_jax model config."""
  return inputs(config.vision.image_size, config.text.context_length, config.text.vocab_size,
                seed=seed)


def jax_outputs(config, variables, images, tokens):
  model = clip_model.CLIP(config)
  outputs = jax.jit(model.apply)(variables, images, tokens)  # op by op, RN50 takes a minute
  return [np.asarray(outputs[key])
          for key in ("image_features", "text_features", "logits_per_image")]


def assert_close(ours, reference, tolerance=TOLERANCE):
  for name, mine, theirs in zip(("image features", "text features", "logits"), ours, reference):
    error = np.max(np.abs(mine - theirs)) / np.max(np.abs(theirs))
    assert error < tolerance, f"{name}: relative error {error:.2e}"


def torch_outputs(model, images, tokens, **encode_kwargs):
  """An open_clip or OpenAI model's (normalised) features and logits per image, with its logit
  bias where it has one (SigLIP's)."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    image_features = model.encode_image(torch.from_numpy(images).permute(0, 3, 1, 2),
                                        **encode_kwargs)
    text_features = model.encode_text(torch.from_numpy(tokens).long(), **encode_kwargs)
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    logits = model.logit_scale.exp() * image_features @ text_features.T
    if getattr(model, "logit_bias", None) is not None:
      logits = logits + model.logit_bias
  return [tensor.numpy() for tensor in (image_features, text_features, logits)]


def assert_exported_tensors(path: str, model) -> None:
  """The safetensors file `path` holds exactly `model`'s state dict (less transformers' buffers
  of position ids), every tensor bit for bit."""
  import torch  # pylint: disable=g-import-not-at-top
  from safetensors import torch as safetensors_torch  # pylint: disable=g-import-not-at-top
  exported = safetensors_torch.load_file(path)
  original = {name: tensor for name, tensor in model.state_dict().items()
              if not name.endswith("position_ids")}
  assert set(exported) == set(original)
  for name, tensor in original.items():
    assert torch.equal(exported[name], tensor), name


def hf_outputs(model, images, tokens):
  """A transformers CLIPModel's or SiglipModel's (normalised) features and logits per image."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    outputs = model(input_ids=torch.from_numpy(tokens).long(),
                    pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2))
  return [outputs.image_embeds.numpy(), outputs.text_embeds.numpy(),
          outputs.logits_per_image.numpy()]


def train_sentencepiece(directory, words, count, seed, **options) -> str:
  """A unigram SentencePiece model trained on `count` random sentences of `words`; its path."""
  sentencepiece = pytest.importorskip("sentencepiece")
  rng = random.Random(seed)
  sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
               for _ in range(count)]
  prefix = str(directory / "spiece")
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_prefix=prefix, hard_vocab_limit=False,
      model_type="unigram", minloglevel=2, **options)
  return prefix + ".model"


def siglip_sentencepiece(directory) -> str:
  """A SentencePiece model laid out as SigLIP's (T5's): <pad> 0, </s> 1, <unk> 2, no <s>; trained
  on words of several scripts, so that canonicalisation and unknown pieces matter. Its path."""
  words = ["a", "photo", "of", "the", "red", "blue", "star", "circle", "large", "small", "in",
           "top", "left", "zürich", "café", "naïve", "über", "東京", "日本", "москва", "straße",
           "ελληνικά", "42", "3"]
  return train_sentencepiece(directory, words, 2000, 1, vocab_size=300, character_coverage=1.0,
                             pad_id=0, eos_id=1, unk_id=2, bos_id=-1)


def tiny_siglip_model(*, vocab_size: int, image_size: int, patch_size: int):
  """A transformers SiglipModel of one 32-wide layer per tower, 12 tokens, perturbed weights."""
  transformers = pytest.importorskip("transformers")
  tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
  config = transformers.SiglipConfig(
      text_config=dict(tower, vocab_size=vocab_size, max_position_embeddings=12),
      vision_config=dict(tower, image_size=image_size, patch_size=patch_size))
  return perturb_(transformers.SiglipModel(config))


GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")  # Gemma's ids 0..4


def gemma_tokenizer(directory, **options) -> str:
  """A tokenizer.json laid out as Gemma's (SigLIP 2's): a byte-fallback BPE over pieces that
  carry their leading "▁", the special tokens at ids 0..4, then the 256 byte pieces; trained with
  Hugging Face `tokenizers` on words of several scripts (unseen characters then fall back to
  bytes). Beside it a tokenizer_config.json naming transformers' Siglip2Tokenizer, with
  `options` (padding_side, ...). Its path."""
  hf_tokenizers = pytest.importorskip("tokenizers")
  words = ["a", "photo", "of", "the", "red", "blue", "star", "circle", "large", "small", "in",
           "top", "left", "zürich", "café", "naïve", "über", "東京", "москва", "straße", "42"]
  rng = random.Random(2)
  sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(2000)]
  tokenizer = hf_tokenizers.Tokenizer(hf_tokenizers.models.BPE(
      unk_token="<unk>", byte_fallback=True, fuse_unk=True))
  tokenizer.normalizer = hf_tokenizers.normalizers.Replace(" ", "▁")
  tokenizer.pre_tokenizer = hf_tokenizers.pre_tokenizers.Split(" ", "merged_with_previous")
  tokenizer.decoder = hf_tokenizers.decoders.Sequence([
      hf_tokenizers.decoders.Replace("▁", " "), hf_tokenizers.decoders.ByteFallback(),
      hf_tokenizers.decoders.Fuse()])
  tokenizer.train_from_iterator(sentences, hf_tokenizers.trainers.BpeTrainer(
      vocab_size=600,
      special_tokens=[*GEMMA_SPECIALS, *(f"<0x{byte:02X}>" for byte in range(256))]))
  directory.mkdir(parents=True, exist_ok=True)
  tokenizer.save(str(directory / "tokenizer.json"))
  (directory / "tokenizer_config.json").write_text(json.dumps(
      {"tokenizer_class": "Siglip2Tokenizer", **options}))
  return str(directory / "tokenizer.json")


# --- The contrastive losses' references (tests/test_losses.py, test_blockwise_losses.py) ---

LOSS_BATCH = 64  # paired_features' global batch
LOSS_WIDTH = 32


def paired_features(seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Unit-norm [N, D] image and text features, each text correlated with its own image."""
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(LOSS_BATCH, LOSS_WIDTH))
  texts = images + 2.0 * rng.normal(size=(LOSS_BATCH, LOSS_WIDTH))
  normalise = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
  return normalise(images), normalise(texts)


def create_mesh(shape):
  return jax.make_mesh(shape, ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def reference_softmax_loss(images, texts, logit_scale):
  logits = math.exp(logit_scale) * images.astype(np.float64) @ texts.astype(np.float64).T

  def cross_entropy(rows):  # the target of row i is column i
    log_normaliser = np.log(np.sum(np.exp(rows - rows.max(1, keepdims=True)), 1)) + rows.max(1)
    return np.mean(log_normaliser - np.diag(rows))

  return (cross_entropy(logits) + cross_entropy(logits.T)) / 2


def reference_sigmoid_loss(images, texts, logit_scale, logit_bias):
  logits = math.exp(logit_scale) * images.astype(np.float64) @ texts.astype(np.float64).T
  logits += logit_bias
  labels = 2 * np.eye(len(images)) - 1
  return np.sum(np.logaddexp(0.0, -labels * logits)) / len(images)  # -log sigmoid(x) = log(1+e^-x)


def assert_relatively_close(actual, expected, tolerance=1e-5, name=""):
  """||actual - expected|| <= tolerance * ||expected|| (exact equality for an all-zero expected)."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  error = np.linalg.norm(actual - expected)
  assert error <= tolerance * np.linalg.norm(expected), (
      f"{name}: relative error {error / np.linalg.norm(expected):.2e}")


def sharded_arguments(mesh, images, texts, logit_scale, logit_bias):
  """Global arrays as the train step has them: batch split over both axes, scalars replicated."""
  batch = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
  replicated = NamedSharding(mesh, PartitionSpec())
  return (jax.device_put(images, batch), jax.device_put(texts, batch),
          jax.device_put(jnp.float32(logit_scale), replicated),
          jax.device_put(jnp.float32(logit_bias), replicated))


def loss_and_gradients(loss_fn):
  return jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2, 3)))
