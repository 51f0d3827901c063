"""CLIP-score filtering of WebDataset shards: the scores are the cosine similarities
`clip_jax.load` gives; the kept samples are written whole, with their scores, exactly once
through an interruption; unscorable samples are counted. The command line runs in
tests/test_docs_pretrained.py."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import shard_files
from clip_jax import filter_shards
from clip_jax import pretrained
from clip_jax import workdir
from input_pipeline.sources import webdataset

CAPTIONS = ("a red circle", "a photo of a dog", "a blue square on grass", "noise")


class Interrupted(Exception):
  pass


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """2 shards of 4 samples (PNG, so that PIL decodes them as TensorFlow does): one without a
  caption, one whose image does not decode, one with a JSON member of its own."""
  folder = tmp_path_factory.mktemp("shards")
  for shard in range(2):
    members = []
    for index, caption in enumerate(CAPTIONS):
      key = f"{shard}{index:03d}"
      image = shard_files.encode(shard_files.photo(30 + 4 * index, 40, seed=10 * shard + index),
                                 "PNG")
      if (shard, index) == (0, 3):
        image = b"<html>404</html>"
      members.append((f"{key}.png", image))
      if (shard, index) != (1, 2):
        members.append((f"{key}.txt", caption.encode()))
      if (shard, index) == (1, 0):
        members.append((f"{key}.json", json.dumps({"url": "https://example.com/a.png"}).encode()))
    shard_files.write_tar(str(folder / f"{shard:05d}.tar"), members)
  return f"{folder}/{{00000..00001}}.tar", str(folder)


@pytest.fixture(scope="module")
def filtered(checkpoint, shards, tmp_path_factory):
  """Half of the scored samples kept: a run interrupted after writing its first output shard,
  then resumed. Returns (out, report, the first output shard's modification time)."""
  out = str(tmp_path_factory.mktemp("filtered"))
  write_kept = filter_shards.write_kept
  calls = []

  def write_one_then_stop(*arguments):
    if calls:
      raise Interrupted
    calls.append(arguments)
    return write_kept(*arguments)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(filter_shards, "write_kept", write_one_then_stop)
    with pytest.raises(Interrupted):
      filter_shards.run(checkpoint, shards[0], out, keep_fraction=0.5, batch_size=4)
  first = os.path.join(out, "shards", "00000.tar")
  written_at = os.path.getmtime(first)
  report = filter_shards.run(checkpoint, shards[0], out, keep_fraction=0.5, batch_size=4)
  return out, report, written_at


def test_scores_are_clip_cosine_similarities(checkpoint, shards, filtered):
  out = filtered[0]
  loaded = pretrained.load(checkpoint)
  for shard, (_, rows) in enumerate(filter_shards.embeddings.read_shards(out, "scores")):
    samples = {key: members for key, members, _ in webdataset.read_samples(
        os.path.join(shards[1], f"{shard:05d}.tar"))}
    images = [Image.open(io.BytesIO(samples[key]["png"])) for key in rows["key"]]
    image_features = np.asarray(loaded.model.apply(loaded.variables, loaded.preprocess(images),
                                                   method=loaded.model.encode_image))
    text_features = np.asarray(loaded.model.apply(loaded.variables, loaded.tokenize(
        rows["caption"]), method=loaded.model.encode_text))
    np.testing.assert_allclose(rows["score"], np.sum(image_features * text_features, axis=-1),
                               atol=1e-5)


def test_half_kept_with_their_scores_exactly_once_through_an_interruption(shards, filtered):
  out, report, written_at = filtered
  assert os.path.getmtime(os.path.join(out, "shards", "00000.tar")) == written_at
  scores = filter_shards.all_scores(out)
  assert report["samples"] == 8 and report["scored"] == 6 == len(scores)
  assert report["unscorable"] == {"does not decode": 1, "no caption": 1}
  assert report["kept"] == 3 and report["threshold"] == np.sort(scores)[3]
  assert json.load(open(os.path.join(out, filter_shards.SETTINGS)))["threshold"] == \
      report["threshold"]
  kept = {}
  for shard in range(2):
    originals = {key: members for key, members, _ in webdataset.read_samples(
        os.path.join(shards[1], f"{shard:05d}.tar"))}
    for key, members, _ in webdataset.read_samples(os.path.join(out, "shards",
                                                                f"{shard:05d}.tar")):
      metadata = json.loads(members.pop("json"))
      kept[key] = metadata.pop(filter_shards.SCORE_KEY)
      original = dict(originals[key])
      assert metadata == json.loads(original.pop("json", b"{}"))  # the sample's own, kept
      assert members == original
  assert len(kept) == 3 and min(kept.values()) == report["threshold"]
  assert sorted(kept.values()) == sorted(scores)[3:]
  assert os.path.getsize(os.path.join(out, "scores.png")) > 5_000


def test_the_sample_limits_hold(checkpoint, shards, tmp_path):
  """Images declaring more than --max_image_pixels are unscorable, never decoded; members over
  --max_member_bytes are left out of what is read and written."""
  # Images of 30, 34, 38 and 42 x 40 pixels (shard 0's last does not decode).
  report = filter_shards.run(checkpoint, shards[0], str(tmp_path / "pixels"), min_score=-1.0,
                             batch_size=4, max_image_pixels=34 * 40)
  assert report["scored"] == 4 and report["unscorable"] == {
      "over the pixel limit": 2, "does not decode": 1, "no caption": 1}
  out = str(tmp_path / "bytes")
  report = filter_shards.run(checkpoint, shards[0], out, min_score=-1.0, batch_size=4,
                             max_member_bytes=32)  # the captions and the 16-byte HTML page
  assert report["scored"] == 0 and report["unscorable"] == {
      "no image": 6, "does not decode": 1, "no caption": 1}


def test_a_resumed_run_keeps_its_flags(checkpoint, shards, filtered):
  with pytest.raises(workdir.SettingsChanged, match=r": keep_fraction: 0\.5 -> 0\.3\. Use a new"):
    filter_shards.run(checkpoint, shards[0], filtered[0], keep_fraction=0.3)
  with pytest.raises(ValueError, match="exactly one of --min_score and --keep_fraction"):
    filter_shards.run(checkpoint, shards[0], filtered[0])


def test_shards_of_the_same_name_are_refused_before_any_work(tmp_path):
  for folder in ("a", "b"):
    (tmp_path / folder).mkdir()
    shard_files.write_tar(str(tmp_path / folder / "00000.tar"), [("0.txt", b"x")])
  with pytest.raises(ValueError, match=r"shards of the same name.*a/00000\.tar and .*b/00000\.tar"):
    filter_shards.run("no-model", f"{tmp_path}/a/00000.tar,{tmp_path}/b/00000.tar",
                      str(tmp_path / "out"), min_score=0.2)
  assert not (tmp_path / "out").exists()
