"""SigLIP and SigLIP 2 against transformers' `SiglipModel` with random weights: features and
logits within 1e-4 in float32, import then export giving back every tensor, and every named
SigLIP model with the reference's parameter count and the published sizes."""

import importlib.metadata
import json
import math
import re

import jax
import numpy as np
import pytest

import clip_jax
import references
from clip_jax import convert
from clip_jax import pretrained
from clip_jax.convert import hf_layout
from clip_jax.models import clip as clip_model
from clip_jax.models import configs
from clip_jax.models import siglip_vision

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

# SiglipConfig keyword arguments: (text_config, vision_config).
HF_CASES = {
    # Odd sizes: 7 px patches of 30 px images (a 4 x 4 grid, two rows of pixels unused, as a
    # "valid" convolution leaves them), 3 heads, a text projection to another width.
    "odd": (dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=12, projection_size=48),
            dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                 num_attention_heads=3, image_size=30, patch_size=7)),
    # google/siglip-so400m-patch14-384's shapes, two layers each: width 1152 in 16 heads of 72,
    # MLP 4304, a 27 x 27 grid of 14 px patches of 384 px images, 64 text tokens of 32k.
    "so400m-shapes": (dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=2,
                           num_attention_heads=16),
                      dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=2,
                           num_attention_heads=16, image_size=384, patch_size=14)),
    # Exact GELU and PyTorch's LayerNorm epsilon: the config decides, not the family's default.
    "gelu": (dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, max_position_embeddings=8, hidden_act="gelu",
                  layer_norm_eps=1e-5),
             dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=16, patch_size=4, hidden_act="gelu",
                  layer_norm_eps=1e-5)),
}


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
  return references.siglip_sentencepiece(tmp_path_factory.mktemp("spiece"))


@pytest.fixture(scope="module", params=list(HF_CASES))
def hf_case(request, tmp_path_factory, tokenizer_file):
  """(SiglipModel with random weights, its save_pretrained directory with a SiglipTokenizer, what
  clip_jax imported)."""
  text, vision = HF_CASES[request.param]
  config = transformers.SiglipConfig(text_config=text, vision_config=vision)
  model = references.perturb_(transformers.SiglipModel(config))
  with torch.no_grad():  # the sigmoid loss's values, not perturb_'s CLIP temperature
    model.logit_scale.fill_(math.log(10) + 0.3)
    model.logit_bias.fill_(-10.0 + 0.7)
  directory = str(tmp_path_factory.mktemp(f"siglip-{request.param}"))
  model.save_pretrained(directory)
  transformers.SiglipTokenizer(vocab_file=tokenizer_file,
                               model_max_length=config.text_config.max_position_embeddings
                               ).save_pretrained(directory)
  return model, directory, convert.import_weights(directory)


def test_siglip_weights_give_siglip_outputs(hf_case):
  model, _, imported = hf_case
  config = imported.config
  assert imported.source["architecture"] == "config.json"
  assert isinstance(config.vision, siglip_vision.SigLIPVisionConfig)
  assert (config.text.causal, config.text.pool, config.text.projection_bias) == (
      False, "last", True)
  assert config.preprocessing == configs.SIGLIP_PREPROCESSING  # no preprocessor_config.json
  images, tokens = references.model_inputs(config)
  references.assert_close(references.jax_outputs(config, imported.variables, images, tokens),
                          references.hf_outputs(model, images, tokens))


def test_the_checkpoint_carries_its_tokenizer_and_runs_from_text(hf_case, tmp_path):
  """clip_jax.load of the converted directory tokenizes as the SiglipTokenizer saved with the
  weights, and its features from those ids are transformers' from the same captions."""
  model, directory, imported = hf_case
  pretrained.save(str(tmp_path / "ckpt"), imported.config, imported.variables, imported.source,
                  imported.tokenizer, imported.tokenizer_file)
  loaded = clip_jax.load(str(tmp_path / "ckpt"))
  captions = ["A photo of a CAT!", "zürich, at night", "", "the red star " * 30]
  assert_tokenized_and_encoded_as_transformers(loaded, model, directory, captions)


def assert_tokenized_and_encoded_as_transformers(loaded, model, directory, captions):
  """clip_jax.load's tokenize gives the ids of the tokenizer saved in `directory`, and its text
  features from them are the transformers model's; the ids."""
  reference = transformers.AutoTokenizer.from_pretrained(str(directory))
  expected = reference(captions, padding="max_length", max_length=loaded.model.config.text.
                       context_length, truncation=True)["input_ids"]
  tokens = loaded.tokenize(captions)
  np.testing.assert_array_equal(tokens, expected)
  with torch.no_grad():
    text_embeds = model.get_text_features(input_ids=torch.tensor(expected)).pooler_output
  text_embeds = (text_embeds / text_embeds.norm(dim=-1, keepdim=True)).numpy()
  ours = loaded.model.apply(loaded.variables, tokens, method=loaded.model.encode_text)
  np.testing.assert_allclose(ours, text_embeds, atol=1e-4 * np.abs(text_embeds).max())
  return expected


def test_siglip_weights_without_their_tokenizer_are_refused(hf_case, tmp_path):
  model, _, _ = hf_case
  model.save_pretrained(str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r"holds SigLIP weights but no spiece\.model or "
                                              r"tokenizer\.json beside them"):
    convert.import_weights(str(tmp_path))


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_siglip2_weights_carry_gemmas_tokenizer_there_and_back(tmp_path, padding_side):
  """A SigLIP 2 directory (SiglipModel weights, Gemma's tokenizer.json and its
  tokenizer_config.json): the converted checkpoint tokenizes as transformers' Siglip2Tokenizer
  and gives transformers' text features; exported, it is a Siglip2Tokenizer again."""
  source = tmp_path / "siglip2"
  references.gemma_tokenizer(source, padding_side=padding_side)
  model = references.tiny_siglip_model(vocab_size=600, image_size=16, patch_size=4)
  model.save_pretrained(str(source))
  imported = convert.import_weights(str(source))
  assert imported.tokenizer == "gemma" and imported.tokenizer_file.endswith("tokenizer.json")
  pretrained.save(str(tmp_path / "ckpt"), imported.config, imported.variables, imported.source,
                  imported.tokenizer, imported.tokenizer_file)
  loaded = clip_jax.load(str(tmp_path / "ckpt"))
  captions = ["A photo of a CAT!", "zürich, at night", "", "the red star " * 30]
  expected = assert_tokenized_and_encoded_as_transformers(loaded, model, source, captions)
  exported = tmp_path / "exported"
  convert.export_weights(imported.config, imported.variables, str(exported), "hf",
                         pretrained.read_tokenizer(str(tmp_path / "ckpt"))[1])
  exported_tokenizer = transformers.AutoTokenizer.from_pretrained(str(exported))
  assert type(exported_tokenizer).__name__ == "Siglip2Tokenizer"
  assert exported_tokenizer(captions, padding="max_length", max_length=12,
                            truncation=True)["input_ids"] == expected


def test_export_gives_back_every_tensor_and_loads_in_transformers(hf_case, tmp_path):
  model, directory, imported = hf_case
  convert.export_weights(imported.config, imported.variables, str(tmp_path), "hf",
                         imported.tokenizer_file)
  references.assert_exported_tensors(str(tmp_path / convert.HF_WEIGHTS), model)
  processor = json.loads((tmp_path / convert.HF_PREPROCESSOR_CONFIG).read_text())
  assert processor["image_processor_type"] == "SiglipImageProcessor"
  reloaded = transformers.SiglipModel.from_pretrained(str(tmp_path)).eval()
  images, tokens = references.model_inputs(imported.config, seed=2)
  for mine, theirs in zip(references.hf_outputs(reloaded, images, tokens),
                          references.hf_outputs(model, images, tokens)):
    np.testing.assert_array_equal(mine, theirs)
  # And back in: the same architecture; the tokenizer goes along, a SiglipTokenizer again.
  assert convert.import_weights(str(tmp_path)).config == imported.config
  exported_tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  assert type(exported_tokenizer).__name__ == "SiglipTokenizer"
  captions = ["A photo of a CAT!", "straße 42"]
  assert (exported_tokenizer(captions, padding="max_length", truncation=True)["input_ids"] ==
          transformers.AutoTokenizer.from_pretrained(directory)(
              captions, padding="max_length", truncation=True)["input_ids"])


def test_open_clip_export_of_a_tower_timm_does_not_name_is_refused(hf_case, tmp_path):
  _, _, imported = hf_case
  with pytest.raises(ValueError, match="open_clip builds SigLIP image towers from timm's named "
                                       "models only, and none has width"):
    convert.export_weights(imported.config, imported.variables, str(tmp_path), "open_clip")


# open_clip's SigLIP: timm's smallest SigLIP image tower (B/32 at 256 px, as ViT-B-32-SigLIP2-256)
# and a small text tower of SigLIP 2's kind (tanh GELU: open_clip's SigLIP 1 configs use the exact
# form in the text tower, unlike the weights' training).
OPEN_CLIP_SIGLIP = dict(
    embed_dim=768, init_logit_bias=-10.0,
    vision_cfg=dict(image_size=256, timm_model_name="vit_base_patch32_siglip_256",
                    timm_model_pretrained=False, timm_pool="map", timm_proj="none"),
    text_cfg=dict(context_length=16, vocab_size=300, width=128, heads=2, layers=2,
                  no_causal_mask=True, proj_bias=True, pool_type="last",
                  norm_kwargs={"eps": 1e-6}, act_kwargs={"approximate": "tanh"}))


@pytest.fixture(scope="module")
def open_clip_case(tmp_path_factory, tokenizer_file):
  """(open_clip CustomTextCLIP with random weights, its directory as open_clip publishes one,
  what clip_jax imported from it)."""
  model = references.perturb_(references.open_clip_model().CustomTextCLIP(**OPEN_CLIP_SIGLIP))
  with torch.no_grad():
    model.logit_scale.fill_(math.log(10) + 0.3)
    model.logit_bias.fill_(-10.0 + 0.7)
  directory = tmp_path_factory.mktemp("open_clip_siglip")
  safetensors_torch.save_file({name: tensor.contiguous()
                               for name, tensor in model.state_dict().items()},
                              str(directory / convert.OPEN_CLIP_WEIGHTS))
  (directory / convert.OPEN_CLIP_CONFIG).write_text(json.dumps({
      "model_cfg": {**OPEN_CLIP_SIGLIP, "custom_text": True},
      "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
                         "resize_mode": "squash"}}))
  (directory / "spiece.model").write_bytes(open(tokenizer_file, "rb").read())
  return model, directory, convert.import_weights(str(directory / convert.OPEN_CLIP_WEIGHTS))


def test_open_clip_siglip_weights_give_open_clip_outputs(open_clip_case):
  model, _, imported = open_clip_case
  config = imported.config
  assert imported.source["format"] == "open_clip_siglip"
  assert isinstance(config.vision, siglip_vision.SigLIPVisionConfig)
  assert (config.activation, config.norm_epsilon, imported.tokenizer) == (
      "gelu_tanh", 1e-6, "siglip")
  assert (config.vision.image_size, config.vision.patch_size, config.vision.head_width,
          config.text.head_width) == (256, 32, 64, 64)
  assert config.preprocessing == configs.SIGLIP_PREPROCESSING
  images, tokens = references.model_inputs(config)
  references.assert_close(references.jax_outputs(config, imported.variables, images, tokens),
                          references.torch_outputs(model, images, tokens))


def test_open_clip_siglip_export_gives_back_every_tensor_and_loads(open_clip_case, tmp_path):
  model, _, imported = open_clip_case
  convert.export_weights(imported.config, imported.variables, str(tmp_path), "open_clip")
  references.assert_exported_tensors(str(tmp_path / convert.OPEN_CLIP_WEIGHTS), model)
  exported = safetensors_torch.load_file(str(tmp_path / convert.OPEN_CLIP_WEIGHTS))
  model_cfg = json.loads((tmp_path / convert.OPEN_CLIP_CONFIG).read_text())["model_cfg"]
  assert model_cfg["vision_cfg"]["timm_model_name"] == "vit_base_patch32_siglip_256"
  model_cfg.pop("custom_text")
  reloaded = references.open_clip_model().CustomTextCLIP(**model_cfg)
  reloaded.load_state_dict(exported)
  images, tokens = references.model_inputs(imported.config, seed=2)
  for mine, theirs in zip(references.torch_outputs(reloaded.eval(), images, tokens),
                          references.torch_outputs(model, images, tokens)):
    np.testing.assert_array_equal(mine, theirs)


SIGLIP_MODELS = [name for name in configs.MODELS if "SigLIP" in name]


def parameter_count(config: configs.CLIPConfig) -> int:
  return sum(int(np.prod(leaf.shape))
             for leaf in jax.tree.leaves(clip_model.abstract_variables(config)))


@pytest.mark.parametrize("name", SIGLIP_MODELS)
def test_named_models_have_the_references_parameter_count(name):
  """transformers' SiglipModel of the same config (built on the meta device: no memory)."""
  config = configs.get_model_config(name)
  hf = hf_layout.hf_config(config, 0.0)
  with torch.device("meta"):
    reference = transformers.SiglipModel(transformers.SiglipConfig(
        text_config=hf["text_config"], vision_config=hf["vision_config"]))
  assert parameter_count(config) == sum(p.numel() for p in reference.parameters())


# timm's SigLIP image towers (vision_transformer.py): (width, depth, heads, MLP width).
TIMM_SIGLIP_VARIANTS = {"base": (768, 12, 12, 3072), "large": (1024, 24, 16, 4096),
                        "so400m": (1152, 27, 16, 4304), "giantopt": (1536, 40, 16, 6144)}


def test_named_models_have_open_clips_published_sizes():
  """open_clip's model configs (read from its package) and the timm towers they name: the sizes
  as the SigLIP authors published them, independent of clip_jax's table."""
  directory = importlib.metadata.distribution("open_clip_torch").locate_file(
      "open_clip/model_configs")
  for name in SIGLIP_MODELS:
    published = json.loads((directory / f"{name}.json").read_text())
    config = configs.get_model_config(name)
    text, vision = published["text_cfg"], published["vision_cfg"]
    variant, patch, size = re.fullmatch(r"vit_(\w+)_patch(\d+)_siglip_(?:gap_)?(\d+)",
                                        vision["timm_model_name"]).groups()
    width, depth, heads, mlp_dim = TIMM_SIGLIP_VARIANTS[variant]
    assert (config.vision.patch_size, config.vision.width, config.vision.layers,
            config.vision.width // config.vision.head_width, config.vision.mlp_dim) == (
                int(patch), width, depth, heads, mlp_dim), name
    assert config.vision.image_size == vision["image_size"], name
    assert config.vision.image_size // int(patch) == int(size) // int(patch), name
    assert (config.embed_dim, config.init_logit_bias) == (published["embed_dim"],
                                                          published["init_logit_bias"]), name
    assert (config.text.context_length, config.text.vocab_size, config.text.width,
            config.text.layers, config.text.width // config.text.head_width) == (
                text["context_length"], text["vocab_size"], text["width"], text["layers"],
                text["heads"]), name
    assert config.text.mlp_dim == int(text["width"] * text.get("mlp_ratio", 4.0)), name
    assert (config.norm_epsilon, config.text.causal, config.text.pool) == (
        text["norm_kwargs"]["eps"], not text["no_causal_mask"], text["pool_type"]), name


def test_a_tower_without_a_projection_needs_embed_dim_to_be_its_width():
  with pytest.raises(ValueError, match=r"embed_dim=512, but a SigLIPVision image tower has no "
                                       r"projection.*allowed: 768"):
    configs.get_model_config("ViT-B-16-SigLIP", embed_dim=512)
