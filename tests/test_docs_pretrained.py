"""docs/pretrained.md: converting with a checkpoint's preprocessing, classify, embed (and the
output read back without clip_jax), search with its contact sheet, CLIP-score filtering, and the
Python snippets; docs/weights.md: converting OpenAI's and LAION's published weights."""

import json
import os

import doc_commands


def test_every_command_and_snippet_of_the_pretrained_page_runs(tmp_path):
  workspace = doc_commands.create_workspace(str(tmp_path))
  doc_commands.add_stand_ins(workspace, "open_clip_model.safetensors", "ckpt/vit-b-32",
                             "cat.jpg", "photos/")
  outputs = doc_commands.run_page("docs/pretrained.md", workspace)
  model = json.load(open(os.path.join(workspace, "ckpt", "siglip-like", "model.json")))["model"]
  assert model["preprocessing"] == {"mean": [0.5] * 3, "std": [0.5] * 3,
                                    "resize_mode": "squash", "interpolation": "bilinear"}
  classified = next(output for command, output in outputs.items() if "clip_jax.classify" in command)
  assert classified.splitlines()[0].split() == ["image", "best", "cat", "dog", "car"]
  embedded = next(output for command, output in outputs.items() if "clip_jax.embed" in command)
  assert "images: 5 embedded in 1 shards" in embedded
  assert "5 images, 32 dimensions" in outputs["python snippet 2"]
  # The stand-in (8 px patches) at 288 px: the class token and a 36 x 36 grid of positions.
  assert "288 (1297, 64)" in outputs["python snippet 3"]
  assert os.path.getsize(os.path.join(workspace, "results.png")) > 10_000
  printed = [line for line in outputs["python snippet 1"].splitlines()
             if line.startswith(("cat:", "dog:", "car:"))]
  assert abs(sum(float(line.split(": ")[1]) for line in printed) - 1) < 0.01
  report = json.load(open(os.path.join(workspace, "filtered", "report.json")))
  assert report["samples"] == report["scored"] == 4 * doc_commands.SHARD_SAMPLES
  assert report["kept"] == round(0.3 * report["scored"])
  assert sorted(os.listdir(os.path.join(workspace, "filtered", "shards"))) == [
      f"0000{index}.tar" for index in range(4)]


def test_every_command_of_the_weights_page_runs(tmp_path):
  """docs/weights.md: an OpenAI file, and hub repositories (open_clip's layout, a SiglipModel with
  its SentencePiece model) through the (offline) hub cache."""
  workspace = doc_commands.create_workspace(str(tmp_path))
  doc_commands.add_stand_ins(workspace, "ViT-B-32.pt",
                             "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
                             "hf-hub:google/siglip-base-patch16-224")
  outputs = doc_commands.run_page("docs/weights.md", workspace)
  siglip = json.load(open(os.path.join(workspace, "ckpt", "siglip-b-16", "model.json")))
  assert siglip["tokenizer"] == {"name": "siglip", "file": "tokenizer/spiece.model"}
  assert siglip["model"]["vision"]["kind"] == "siglip_vit"
  hub = next(output for command, output in outputs.items() if "hf-hub:" in command)
  assert "Read hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K (" in hub
  for converted in ("vit-b-32", "vit-b-32-laion2b"):
    assert os.path.isfile(os.path.join(workspace, "ckpt", converted, "model.json")), converted
