"""Weight conversion against the PyTorch implementations themselves: open_clip's CLIP (ViT and
ModifiedResNet), OpenAI's TorchScript archives, transformers' CLIPModel, each with random
weights. Features and logits must match within 1e-4 relative error in float32; import then
export must give back the very same tensors, which the references load and run."""

import dataclasses
import json
import os
import pathlib

import numpy as np
import pytest

import command_server
import hub_cache
import references
from clip_jax import convert
from clip_jax import pretrained
from clip_jax.convert import tensor_files
from clip_jax import image_preparation

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

# bfloat16 compute (float32 parameters) against float32 PyTorch: features' cosine similarity.
BFLOAT16_MIN_COSINE = 0.999

TINY_TEXT = dict(context_length=16, vocab_size=1000, width=64, heads=1, layers=2)
OPENAI_TEXT = dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12)
# open_clip model configs, named as clip_jax's table names the same shapes (None: no entry).
OPEN_CLIP_MODELS = {
    "tiny-vit": dict(embed_dim=32, quick_gelu=False, text_cfg=TINY_TEXT, vision_cfg=dict(
        image_size=32, patch_size=8, width=64, layers=2, head_width=64)),
    "ViT-B-32": dict(embed_dim=512, quick_gelu=True, text_cfg=OPENAI_TEXT, vision_cfg=dict(
        image_size=224, patch_size=32, width=768, layers=12, head_width=64)),
    "resnet-tiny": dict(embed_dim=32, quick_gelu=True, text_cfg=TINY_TEXT, vision_cfg=dict(
        image_size=64, layers=[1, 1, 1, 1], width=16, head_width=64)),
    "RN50": dict(embed_dim=1024, quick_gelu=True, text_cfg=OPENAI_TEXT, vision_cfg=dict(
        image_size=224, layers=[3, 4, 6, 3], width=64, head_width=64)),
}
# How each one is written: the file formats people meet.
FILE_FORMATS = {"tiny-vit": "state_dict.pt", "ViT-B-32": "safetensors",
                "resnet-tiny": "training_checkpoint.pt", "RN50": "pytorch_model.bin"}


def write(state_dict, directory, file_format):
  """The state dict as a file of `file_format`; returns its path."""
  if file_format == "safetensors":
    path = os.path.join(directory, "weights.safetensors")
    safetensors_torch.save_file({name: tensor.contiguous() for name, tensor in state_dict.items()},
                                path)
  elif file_format == "training_checkpoint.pt":  # open_clip's: wrapped, DataParallel prefixes
    path = os.path.join(directory, "epoch_3.pt")
    torch.save({"epoch": 3, "state_dict": {f"module.{name}": tensor
                                           for name, tensor in state_dict.items()}}, path)
  else:
    path = os.path.join(directory, file_format)
    torch.save(state_dict, path)
  return path


@pytest.fixture(scope="module")
def open_clip_cases(tmp_path_factory):
  """name -> (open_clip model, the file written, what clip_jax imported from it), built once."""
  cases = {}

  def case(name):
    if name not in cases:
      model = references.perturb_(references.open_clip_model().CLIP(**OPEN_CLIP_MODELS[name]))
      path = write(model.state_dict(), tmp_path_factory.mktemp(name), FILE_FORMATS[name])
      cases[name] = model, path, convert.import_weights(path)
    return cases[name]

  return case


@pytest.mark.parametrize("name", list(OPEN_CLIP_MODELS))
def test_open_clip_weights_give_open_clip_outputs(open_clip_cases, name):
  model, _, imported = open_clip_cases(name)
  expected = "shapes" if name == "resnet-tiny" else f"shapes, as {name}"  # no such named model
  assert imported.source["architecture"] == expected
  images, tokens = references.model_inputs(imported.config)
  references.assert_close(
      references.jax_outputs(imported.config, imported.variables, images, tokens),
      references.torch_outputs(model, images, tokens))


@pytest.mark.parametrize("name", ["ViT-B-32", "RN50"])
def test_bfloat16_compute_stays_within_its_tolerance(open_clip_cases, name):
  model, _, imported = open_clip_cases(name)
  config = dataclasses.replace(imported.config, dtype="bfloat16")
  images, tokens = references.model_inputs(config)
  ours = references.jax_outputs(config, imported.variables, images, tokens)
  reference = references.torch_outputs(model, images, tokens)
  for mine, theirs in zip(ours[:2], reference[:2]):  # unit vectors: their cosine similarity
    assert np.min(np.sum(mine * theirs, axis=-1)) > BFLOAT16_MIN_COSINE


@pytest.mark.parametrize("name", list(OPEN_CLIP_MODELS))
def test_export_for_open_clip_gives_back_the_tensors_and_loads_in_open_clip(open_clip_cases, name,
                                                                         tmp_path):
  model, _, imported = open_clip_cases(name)
  convert.export_weights(imported.config, imported.variables, str(tmp_path), "open_clip")
  exported = safetensors_torch.load_file(str(tmp_path / convert.OPEN_CLIP_WEIGHTS))
  original = model.state_dict()
  expected_names = {name for name in original if not name.endswith("num_batches_tracked")}
  assert set(exported) == expected_names
  for name in expected_names:
    assert torch.equal(exported[name], original[name]), name
  with open(tmp_path / convert.OPEN_CLIP_CONFIG) as file:
    model_cfg = json.load(file)["model_cfg"]
  reloaded = references.open_clip_model().CLIP(**model_cfg).eval()
  missing, unexpected = reloaded.load_state_dict(exported, strict=False)
  assert not unexpected and all(name.endswith("num_batches_tracked") for name in missing)
  images, tokens = references.model_inputs(imported.config, seed=1)
  np.testing.assert_array_equal(references.torch_outputs(reloaded, images, tokens)[0],
                                references.torch_outputs(model, images, tokens)[0])


def test_openai_torchscript_archive(tmp_path):
  """OpenAI distributes TorchScript archives; their weights are QuickGELU."""
  openai = references.openai_clip_model()
  model = references.perturb_(openai.CLIP(
      embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
      context_length=16, vocab_size=1000, transformer_width=64, transformer_heads=1,
      transformer_layers=2))
  images, tokens = references.inputs(32, 16, 1000)
  traced = torch.jit.trace(model, (torch.from_numpy(images).permute(0, 3, 1, 2),
                                   torch.from_numpy(tokens).long()))
  path = str(tmp_path / "ViT-tiny.pt")
  torch.jit.save(traced, path)
  assert tensor_files.is_torchscript(path)
  imported = convert.import_weights(path, trust_code=True)  # a trace of its own, not OpenAI's
  assert imported.source["format"] == "openai_torchscript"
  assert imported.config.activation == "quick_gelu"
  references.assert_close(
      references.jax_outputs(imported.config, imported.variables, images, tokens),
      references.torch_outputs(model, images, tokens))


@pytest.fixture(scope="module", params=["tiny", "ViT-B-32"])
def hf_case(request, tmp_path_factory):
  """(transformers CLIPModel with random weights, its save_pretrained directory, imported)."""
  transformers = pytest.importorskip("transformers")
  if request.param == "tiny":
    text = dict(vocab_size=1000, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=16, bos_token_id=998,
                eos_token_id=999, hidden_act="gelu")
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, image_size=32, patch_size=8, hidden_act="gelu")
    projection_dim, safe = 32, False  # pytorch_model.bin
  else:  # openai/clip-vit-base-patch32's sizes
    text = dict(eos_token_id=49407, bos_token_id=49406)
    vision = dict(patch_size=32)
    projection_dim, safe = 512, True
  config = transformers.CLIPConfig(text_config=text, vision_config=vision,
                                   projection_dim=projection_dim)
  model = references.perturb_(transformers.CLIPModel(config))
  directory = str(tmp_path_factory.mktemp(f"hf-{request.param}"))
  model.save_pretrained(directory, safe_serialization=safe)
  return model, directory, convert.import_weights(directory)


def test_hugging_face_weights_give_hugging_face_outputs(hf_case):
  model, _, imported = hf_case
  assert imported.source["architecture"] == "config.json"
  images, tokens = references.model_inputs(imported.config)
  references.assert_close(
      references.jax_outputs(imported.config, imported.variables, images, tokens),
      references.hf_outputs(model, images, tokens))


def test_export_for_hugging_face_gives_back_the_tensors_and_loads(hf_case, tmp_path):
  transformers = pytest.importorskip("transformers")
  model, _, imported = hf_case
  convert.export_weights(imported.config, imported.variables, str(tmp_path), "hf")
  references.assert_exported_tensors(str(tmp_path / convert.HF_WEIGHTS), model)
  reloaded = transformers.CLIPModel.from_pretrained(str(tmp_path)).eval()
  images, tokens = references.model_inputs(imported.config, seed=2)
  for mine, theirs in zip(references.hf_outputs(reloaded, images, tokens),
                          references.hf_outputs(model, images, tokens)):
    np.testing.assert_array_equal(mine, theirs)


def test_wrong_architecture_names_what_does_not_fit(open_clip_cases):
  _, path, _ = open_clip_cases("tiny-vit")
  with pytest.raises(ValueError, match=r"do not fit.*visual\.conv1\.weight: \(64, 3, 8, 8\)"):
    convert.import_weights(path, model="tiny-rn")


def test_unknown_file_format_is_named(tmp_path):
  path = tmp_path / "weights.npz"
  path.write_bytes(b"")
  with pytest.raises(ValueError, match=r"weights\.npz: unknown weights format; allowed"):
    convert.import_weights(str(path))


def test_command_line_round_trip_and_load(open_clip_cases, tmp_path):
  """`python -m clip_jax.convert` imports, `clip_jax.load` gives a model whose features are the
  reference's, and `--to=open_clip` writes the original tensors back."""
  model, path, _ = open_clip_cases("tiny-vit")
  def run(*flags):
    completed = command_server.run_python(["-m", "clip_jax.convert", *flags])
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed

  converted = str(tmp_path / "converted")
  printed = run(f"--src={path}", f"--dst={converted}", "--mean=0.5,0.5,0.5", "--std=0.5,0.5,0.5",
                "--resize_mode=squash", "--interpolation=bilinear").stdout
  assert "architecture from shapes, as tiny-vit, activation gelu" in printed
  assert "resize_mode squash (flag)" in printed
  loaded = pretrained.load(converted)
  assert loaded.model.config.preprocessing == SIGLIP_LIKE
  images, tokens = references.model_inputs(loaded.model.config)
  references.assert_close(
      references.jax_outputs(loaded.model.config, loaded.variables, images, tokens),
      references.torch_outputs(model, images, tokens))
  run(f"--src={converted}", f"--dst={tmp_path / 'exported'}", "--to=open_clip")
  exported = safetensors_torch.load_file(str(tmp_path / "exported" / convert.OPEN_CLIP_WEIGHTS))
  assert all(torch.equal(exported[key], tensor) for key, tensor in model.state_dict().items())


def test_hub_repository_converts_offline_from_the_cache(open_clip_cases, tmp_path):
  """`--src=hf-hub:<repo>` goes through huggingface_hub: offline, it finds the repository in the
  hub's cache (its layout made here), with open_clip's weights and published preprocessing."""
  model, path, _ = open_clip_cases("tiny-vit")
  hub_cache.add_repository(tmp_path / "hub", "acme/clip-tiny", {
      "open_clip_pytorch_model.bin": pathlib.Path(path),
      convert.OPEN_CLIP_CONFIG: json.dumps({
          "model_cfg": {"quick_gelu": False},
          "preprocess_cfg": {"mean": 0.5, "std": 0.5, "interpolation": "bilinear",
                             "resize_mode": "squash"}})})
  environment = {**os.environ, **hub_cache.offline_environment(tmp_path / "hub")}
  converted = str(tmp_path / "converted")
  completed = command_server.run_python(
      ["-m", "clip_jax.convert", "--src=hf-hub:acme/clip-tiny", f"--dst={converted}"],
      env=environment)
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert "Read hf-hub:acme/clip-tiny (" in completed.stdout
  assert f"resize_mode squash ({convert.OPEN_CLIP_CONFIG})" in completed.stdout
  loaded = pretrained.load(converted)
  assert loaded.model.config.preprocessing == SIGLIP_LIKE
  images, tokens = references.model_inputs(loaded.model.config)
  references.assert_close(
      references.jax_outputs(loaded.model.config, loaded.variables, images, tokens),
      references.torch_outputs(model, images, tokens))
  missing = command_server.run_python(
      ["-m", "clip_jax.convert", "--src=hf-hub:acme/elsewhere", f"--dst={tmp_path / 'x'}"],
      env=environment)
  assert missing.returncode != 0 and "acme/elsewhere" in missing.stderr


SIGLIP_LIKE = image_preparation.Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                    resize_mode="squash", interpolation="bilinear")


def test_preprocessing_comes_from_the_published_config_then_the_flags(open_clip_cases, tmp_path):
  """A hub repository of open_clip's layout, and one of transformers' (SigLIP's processor: both
  sides, bilinear, 0.5/0.5), record their published preprocessing (and open_clip's config the
  activation); given fields win over it; bare weights get OpenAI's."""
  _, path, bare = open_clip_cases("tiny-vit")
  assert bare.config.preprocessing == image_preparation.Preprocessing()
  assert set(bare.source["preprocessing"].values()) == {"the architecture's default"}
  open_clip_repo = tmp_path / "open_clip_repo"
  open_clip_repo.mkdir()
  os.symlink(path, open_clip_repo / "open_clip_pytorch_model.bin")
  (open_clip_repo / convert.OPEN_CLIP_CONFIG).write_text(json.dumps({
      "model_cfg": {}, "preprocess_cfg": {"mean": 0.5, "std": [0.5, 0.5, 0.5],
                                          "interpolation": "bilinear", "resize_mode": "squash"}}))
  hf_repo = tmp_path / "hf_repo"
  hf_repo.mkdir()
  os.symlink(path, hf_repo / "pytorch_model.bin")
  (hf_repo / convert.HF_PREPROCESSOR_CONFIG).write_text(json.dumps({
      "image_processor_type": "SiglipImageProcessor", "image_mean": [0.5, 0.5, 0.5],
      "image_std": [0.5, 0.5, 0.5], "resample": 2, "size": {"height": 32, "width": 32}}))
  for repo, published_in in ((open_clip_repo, convert.OPEN_CLIP_CONFIG),
                             (hf_repo, convert.HF_PREPROCESSOR_CONFIG)):
    imported = convert.import_weights(str(repo))
    assert imported.config.preprocessing == SIGLIP_LIKE, repo
    assert set(imported.source["preprocessing"].values()) == {published_in}
    np.testing.assert_array_equal(imported.variables["params"]["logit_scale"],
                                  bare.variables["params"]["logit_scale"])
  # open_clip's config also names the activation: GELU unless its model_cfg says QuickGELU.
  assert convert.import_weights(str(open_clip_repo)).config.activation == "gelu"
  (open_clip_repo / convert.OPEN_CLIP_CONFIG).write_text(json.dumps({
      "model_cfg": {"quick_gelu": True}}))
  assert convert.import_weights(str(open_clip_repo)).config.activation == "quick_gelu"
  given = convert.import_weights(str(hf_repo), preprocessing=dict(resize_mode="shortest",
                                                                  mean=None))
  assert given.config.preprocessing == dataclasses.replace(SIGLIP_LIKE, resize_mode="shortest")
  assert given.source["preprocessing"]["resize_mode"] == "flag"
  with pytest.raises(ValueError, match=r"preprocessing\.resize_mode='longest'; allowed: "
                                       r"shortest, squash"):
    convert.import_weights(str(hf_repo), preprocessing=dict(resize_mode="longest"))


def test_export_publishes_the_preprocessing_for_each_library(open_clip_cases, tmp_path):
  """open_clip's preprocess_cfg and transformers' image processor config say what the checkpoint
  records; importing the export gives it back."""
  transformers = pytest.importorskip("transformers")
  _, _, imported = open_clip_cases("tiny-vit")
  config = dataclasses.replace(imported.config, preprocessing=SIGLIP_LIKE)
  for to in convert.EXPORT_FORMATS:
    convert.export_weights(config, imported.variables, str(tmp_path / to), to)
    assert convert.import_weights(str(tmp_path / to)).config.preprocessing == SIGLIP_LIKE, to
  with open(tmp_path / "open_clip" / convert.OPEN_CLIP_CONFIG) as file:
    assert json.load(file)["preprocess_cfg"] == dict(
        size=32, mean=[0.5] * 3, std=[0.5] * 3, interpolation="bilinear", resize_mode="squash")
  processor = transformers.CLIPImageProcessor.from_pretrained(str(tmp_path / "hf"))
  assert list(processor.image_mean) == list(processor.image_std) == [0.5] * 3
  assert processor.resample == 2 and not processor.do_center_crop
  pixels = np.random.default_rng(0).integers(0, 256, (40, 24, 3), dtype=np.uint8)
  assert processor(images=pixels, return_tensors="np")["pixel_values"].shape == (1, 3, 32, 32)
