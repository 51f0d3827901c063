"""docs/models.md and docs/evaluation.md: converting open_clip and transformers weights in and
out, the model snippet, and evaluating a converted checkpoint."""

import json
import os

import doc_commands


def test_every_command_and_snippet_of_the_models_page_runs(tmp_path):
  workspace = doc_commands.create_workspace(str(tmp_path))
  doc_commands.add_stand_ins(workspace, "open_clip_model.safetensors", "clip-vit-base-patch32")
  doc_commands.run_page("docs/models.md", workspace)
  for exported in ("export/open_clip/open_clip_model.safetensors", "export/hf/model.safetensors"):
    assert os.path.isfile(os.path.join(workspace, exported)), exported


def test_every_command_and_snippet_of_the_evaluation_page_runs(tmp_path):
  workspace = doc_commands.create_workspace(str(tmp_path))
  doc_commands.add_stand_ins(workspace, "ckpt/vit-b-32", "evalsets/")
  doc_commands.run_page("docs/evaluation.md", workspace)
  results = json.load(open(os.path.join(workspace, "ckpt", "vit-b-32", "evaluation.json")))
  assert 0 <= results["cifar10/top1"] <= 1
  at_288px = json.load(open(os.path.join(workspace, "evaluation-288px.json")))
  assert 0 <= at_288px["cifar10/top1"] <= 1
  suite = json.load(open(os.path.join(workspace, "ckpt", "vit-b-32", "benchmark.json")))
  assert set(suite["tasks"]) == {"cifar10", "retrieval/mscoco_2014_5k_test_image_text_retrieval"}
  assert suite["tasks_covered"] == 2 and len(suite["absent"]) == 36
  table = open(os.path.join(workspace, "ckpt", "vit-b-32", "benchmark.csv")).read()
  assert table.startswith("name,pretrained,Average perf. on 2 datasets,ImageNet 1k,")
