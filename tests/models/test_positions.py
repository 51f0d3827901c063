"""Learned positions at another image size or text length, against PyTorch's interpolation
(`torch.nn.functional.interpolate`), open_clip's `resize_pos_embed` / `resize_text_pos_embed`
and transformers' `interpolate_pos_encoding` run inside `SiglipModel`; and fine-tuning from a
checkpoint of another resolution."""

import dataclasses
import types

import jax
import numpy as np
import pytest

import references
from clip_jax import finetune
from clip_jax import pretrained
from clip_jax import settings
from clip_jax.models import clip as clip_model
from clip_jax.models import configs
from clip_jax.models import positions

torch = pytest.importorskip("torch")
functional = torch.nn.functional

TOLERANCE = 1e-5


@pytest.mark.parametrize("old, new", [(7, 12), (14, 24), (16, 24), (24, 16), (16, 27),
                                       (27, 16), (10, 3), (3, 10), (7, 7)])
@pytest.mark.parametrize("method", positions.METHODS)
def test_grids_resize_as_pytorch_interpolates(old, new, method):
  rng = np.random.default_rng(old * 100 + new)
  embedding = rng.normal(size=(1 + old * old, 5)).astype(np.float32)
  ours = positions.resize_grid(embedding, 1, new, method)
  grid = torch.from_numpy(embedding[1:]).reshape(1, old, old, 5).permute(0, 3, 1, 2)
  reference = functional.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False,
                                     antialias=method == "open_clip")
  np.testing.assert_array_equal(ours[0], embedding[0])  # the class token's position kept
  np.testing.assert_allclose(ours[1:], reference.permute(0, 2, 3, 1).reshape(-1, 5).numpy(),
                             atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("old, new", [(77, 64), (64, 77), (16, 64), (64, 16), (77, 77)])
def test_text_positions_resize_linearly_as_pytorch(old, new):
  embedding = np.random.default_rng(old + new).normal(size=(old, 8)).astype(np.float32)
  reference = functional.interpolate(torch.from_numpy(embedding).T[None], size=new,
                                     mode="linear", align_corners=False)[0].T.numpy()
  np.testing.assert_allclose(positions.resize_sequence(embedding, new), reference,
                             atol=TOLERANCE, rtol=0)


def test_open_clips_resize_functions_give_the_same_positions():
  """open_clip's own functions on a state dict, for a model at 48 px and 24 tokens."""
  open_clip_model = references.open_clip_model()
  text = dict(context_length=16, vocab_size=1000, width=64, heads=1, layers=1)
  vision = dict(image_size=32, patch_size=8, width=64, layers=1, head_width=64)
  old = references.perturb_(open_clip_model.CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text))
  new = open_clip_model.CLIP(embed_dim=32, vision_cfg={**vision, "image_size": 48},
                             text_cfg={**text, "context_length": 24})
  state_dict = dict(old.state_dict())
  open_clip_model.resize_pos_embed(state_dict, new)
  open_clip_model.resize_text_pos_embed(state_dict, new)
  original = {name: tensor.numpy() for name, tensor in old.state_dict().items()}
  np.testing.assert_allclose(
      positions.resize_grid(original["visual.positional_embedding"], 1, 6, "open_clip"),
      state_dict["visual.positional_embedding"].numpy(), atol=TOLERANCE, rtol=0)
  np.testing.assert_allclose(positions.resize_sequence(original["positional_embedding"], 24),
                             state_dict["positional_embedding"].numpy(), atol=TOLERANCE, rtol=0)


def test_a_siglip_model_at_another_resolution_computes_as_transformers_interpolates():
  """SiglipModel(interpolate_pos_encoding=True) on 44 px images of a model of 30 px (7 px patches:
  a 4 x 4 grid to 6 x 6), against the converted model loaded at 44 px: features and logits."""
  from clip_jax.convert import hf_layout  # pylint: disable=g-import-not-at-top
  from clip_jax.convert import openai_layout  # pylint: disable=g-import-not-at-top
  model = references.tiny_siglip_model(vocab_size=100, image_size=30, patch_size=7)
  config = hf_layout.config_from_hf(model.config.to_dict())
  variables = openai_layout.from_state_dict(
      hf_layout.from_hf({name: tensor.numpy() for name, tensor in model.state_dict().items()}),
      config)
  resized_model, resized_variables, data = pretrained.resized(
      clip_model.CLIP(config), variables, settings.Data(), image_size=44)
  assert data.image_size == 44 and resized_model.config.vision.image_size == 44
  images, tokens = references.inputs(44, 12, 100)
  with torch.no_grad():
    outputs = model(input_ids=torch.from_numpy(tokens).long(),
                    pixel_values=torch.from_numpy(images).permute(0, 3, 1, 2),
                    interpolate_pos_encoding=True)
  expected = [outputs.image_embeds.numpy(), outputs.text_embeds.numpy(),
              outputs.logits_per_image.numpy()]
  references.assert_close(
      references.jax_outputs(resized_model.config, resized_variables, images, tokens), expected)


def test_only_the_image_size_and_text_length_may_change():
  config = configs.get_model_config("tiny-vit")
  variables = jax.tree.map(np.asarray, clip_model.init_variables(config, jax.random.PRNGKey(0)))
  with pytest.raises(ValueError, match="differs from the checkpoint's .* in more than the image "
                                       "size and text length"):
    positions.resize_variables(variables, config, dataclasses.replace(config, embed_dim=16))
  with pytest.raises(ValueError, match=r"position_interpolation='nearest'; allowed: open_clip, "
                                       r"hf\."):
    positions.resize_variables(variables, config, positions.resized_config(config, 48), "nearest")


def test_fine_tuning_from_another_resolution_starts_from_the_interpolated_positions(tmp_path):
  """A tiny ViT saved at 32 px and 16 tokens, fine-tuned at 48 px and 24: its positions are
  interpolated (by open_clip's way, or as asked), every other variable is the checkpoint's."""
  saved = configs.get_model_config("tiny-vit")
  saved_variables = jax.tree.map(np.asarray,
                                 clip_model.init_variables(saved, jax.random.PRNGKey(1)))
  pretrained.save(str(tmp_path / "ckpt"), saved, saved_variables)
  architecture = configs.get_model_config("tiny-vit", vision=dict(image_size=48),
                                          text=dict(context_length=24))
  abstract = clip_model.abstract_variables(architecture)
  abstract_state = types.SimpleNamespace(params=abstract["params"], batch_stats={})
  for method in ("", "hf"):
    given = settings.Finetune(checkpoint=str(tmp_path / "ckpt"), position_interpolation=method)
    finetune.check_source(given, architecture)
    started = finetune.initial_variables(given, architecture, abstract_state)["params"]
    visual, text = started["visual"], started["text"]
    np.testing.assert_array_equal(visual["positional_embedding"], positions.resize_grid(
        saved_variables["params"]["visual"]["positional_embedding"], 1, 6, method or "open_clip"))
    np.testing.assert_array_equal(text["positional_embedding"], positions.resize_sequence(
        saved_variables["params"]["text"]["positional_embedding"], 24))
    np.testing.assert_array_equal(visual["conv1"]["kernel"],
                                  saved_variables["params"]["visual"]["conv1"]["kernel"])
