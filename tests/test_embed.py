"""Embedding, search and zero-shot classification with a converted random-weight open_clip
checkpoint (clip_jax.embeddings, behind clip_jax.embed, search and classify): a folder of real
photographs and generated images (some unreadable) embedded, interrupted and resumed; WebDataset
shards and captions; the embeddings against the model applied to `load(...).preprocess`; exact
search against brute force; probabilities against a float64 computation. The command lines run
in tests/test_docs_pretrained.py."""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

import shard_files
from clip_jax import embeddings
from clip_jax import pretrained
from clip_jax import workdir

skimage_data = pytest.importorskip("skimage.data")

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera")
FILES_PER_SHARD = 3
# Stored float32, computed float32: the same numbers as the model's, up to the batch's padding.
ATOL = 1e-5


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """Photographs (JPEG and PNG, in a subfolder too), generated images, an unreadable file and
  one that is not an image; and a file that is not an image by name, which is not listed."""
  root = tmp_path_factory.mktemp("images")
  (root / "photos").mkdir()
  for index, name in enumerate(PHOTOS):
    pixels = getattr(skimage_data, name)()
    suffix = ("jpg", "png")[index % 2]
    Image.fromarray(pixels).save(root / "photos" / f"{name}.{suffix}")
  for index in range(4):
    (root / f"generated_{index}.png").write_bytes(
        shard_files.encode(shard_files.photo(40 + 10 * index, 50, seed=index), "PNG"))
  (root / "truncated.jpg").write_bytes(shard_files.bad_images()["truncated_jpeg"][1])
  (root / "page.png").write_bytes(b"<html>404</html>")
  (root / "notes.txt").write_text("not listed")
  return str(root)


def readable(folder):
  return sorted(os.path.relpath(os.path.join(directory, name), folder)
                for directory, _, names in os.walk(folder) for name in names
                if not name.endswith(".txt") and name not in ("truncated.jpg", "page.png"))


class Interrupted(Exception):
  pass


@pytest.fixture(scope="module")
def folder_index(checkpoint, folder, tmp_path_factory):
  """The folder embedded in shards of 3 files: a run stopped after its second shard (as a kill
  between two shards, or in the middle of the third), then resumed. Returns (index, the resumed
  run's result, the stopped run's shards' modification times)."""
  out = str(tmp_path_factory.mktemp("folder_index") / "index")
  options = embeddings.Options(model=checkpoint, images=folder, output_dtype="float32",
                               files_per_shard=FILES_PER_SHARD, batch_size=2)
  written = []
  write_shard = embeddings.write_shard

  def write_two_then_stop(out, kind, index, *arguments):
    if len(written) == 2:
      raise Interrupted
    write_shard(out, kind, index, *arguments)
    written.append(index)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(embeddings, "write_shard", write_two_then_stop)
    with pytest.raises(Interrupted):
      embeddings.run(options, out)
  stopped_shards = {index: os.path.getmtime(os.path.join(out, "images", f"0000{index}.npy"))
                    for index in written}
  return out, embeddings.run(options, out), stopped_shards


def test_a_folder_embedded_interrupted_and_resumed(folder, folder_index, checkpoint):
  out, result, stopped_shards = folder_index
  num_inputs = len(readable(folder)) + 2
  num_shards = -(-num_inputs // FILES_PER_SHARD)
  # In sorted order the stopped run's two shards held generated_*.png, page.png (which does not
  # decode) and photos/astronaut.jpg; the resumed run the rest, truncated.jpg among them.
  assert result["this_run"]["images"] == {
      "embedded": len(readable(folder)) - (2 * FILES_PER_SHARD - 1), "skipped": 1,
      "shards_done_before": 2}
  # The shards done before were left alone; every readable image is there exactly once.
  assert stopped_shards == {index: os.path.getmtime(os.path.join(out, "images", f"0000{index}.npy"))
                            for index in stopped_shards}
  vectors, rows = embeddings.read_all(out)
  assert sorted(rows["key"]) == readable(folder)
  assert vectors.shape == (len(readable(folder)), 32)
  np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1, atol=1e-5)
  skipped = [json.loads(line) for line in open(os.path.join(out, "skipped.jsonl"))]
  assert sorted(entry["key"] for entry in skipped) == ["page.png", "truncated.jpg"]
  manifest = json.load(open(os.path.join(out, embeddings.MANIFEST)))
  assert manifest["totals"]["images"] == {"shards": num_shards, "inputs": num_inputs,
                                          "embedded": len(readable(folder)), "skipped": 2}
  assert manifest["model"]["preprocessing"]["resize_mode"] == "shortest"
  with pytest.raises(workdir.SettingsChanged,
                     match=r": options\.files_per_shard: 3 -> 5\. Use a new"):
    embeddings.run(embeddings.Options(model=checkpoint, images=folder, output_dtype="float32",
                                      files_per_shard=5, batch_size=2), out)


def test_embeddings_are_the_model_applied_to_load_preprocess(folder, folder_index, checkpoint):
  vectors, rows = embeddings.read_all(folder_index[0])
  loaded = pretrained.load(checkpoint)
  images = [Image.open(os.path.join(folder, key)) for key in rows["key"]]
  expected = loaded.model.apply(loaded.variables, loaded.preprocess(images),
                                method=loaded.model.encode_image)
  np.testing.assert_allclose(vectors, expected, atol=ATOL)


def test_exact_search_with_texts_and_images(folder, folder_index, checkpoint):
  """The top k equals a brute-force ranking of every stored embedding, over chunks of the index
  or in one; an indexed photograph finds itself first."""
  index = folder_index[0]
  vectors, rows = embeddings.read_all(index)
  embedder = embeddings.Embedder(checkpoint)
  queries = ["a photo of a cat", os.path.join(folder, "photos", "chelsea.png")]
  features = embeddings.encode_queries(embedder, queries)
  brute_force = features @ vectors.T  # [Q, N]
  for chunk_rows in (4, embeddings.CHUNK_ROWS):
    scores, results = embeddings.top_k(features, index, k=4, chunk_rows=chunk_rows)
    for query, query_results in enumerate(results):
      expected = np.argsort(-brute_force[query], kind="stable")[:4]
      assert [row["key"] for row in query_results] == [rows["key"][i] for i in expected]
      np.testing.assert_allclose(scores[query], brute_force[query][expected], atol=1e-5)
  assert results[1][0]["key"] == os.path.join("photos", "chelsea.png")
  assert scores[1][0] == pytest.approx(1, abs=1e-3)
  scores, results = embeddings.top_k(features, index, k=100)  # more than the index holds
  assert scores.shape == (2, len(rows["key"])) and len(results[0]) == len(rows["key"])


def test_webdataset_shards_and_captions(checkpoint, tmp_path):
  """A tar's samples keep their keys, captions and offsets (which find the sample again); a
  sample without a decodable image is skipped; --texts embeds a caption a line, in bfloat16."""
  from input_pipeline.sources import webdataset  # pylint: disable=g-import-not-at-top
  for shard in range(2):
    members = []
    for index in range(3):
      key = f"{shard}{index:04d}"
      image = (shard_files.bad_images()["html_page"][1] if (shard, index) == (1, 1) else
               shard_files.encode(shard_files.photo(36, 48, seed=10 * shard + index), "JPEG"))
      members += [(f"{key}.jpg", image), (f"{key}.txt", f"caption {key}".encode())]
    shard_files.write_tar(str(tmp_path / f"{shard:05d}.tar"), members)
  texts = tmp_path / "captions.txt"
  texts.write_text("a photo of a cat\n\na diagram of a rocket\n")
  out = str(tmp_path / "index")
  totals = embeddings.run(embeddings.Options(
      model=checkpoint, images=f"{tmp_path}/{{00000..00001}}.tar", texts=str(texts),
      dtype="bfloat16"), out)["totals"]
  assert totals == {"images": {"shards": 2, "inputs": 6, "embedded": 5, "skipped": 1},
                    "texts": {"shards": 1, "inputs": 2, "embedded": 2, "skipped": 0}}
  vectors, rows = embeddings.read_all(out)
  assert vectors.shape == (5, 32)
  assert rows["key"] == ["00000", "00001", "00002", "10000", "10002"]
  assert rows["caption"] == [f"caption {key}" for key in rows["key"]]
  for key, source, offset in zip(rows["key"], rows["source"], rows["offset"]):
    assert next(webdataset.read_samples(source, offset))[0] == key

  loaded = pretrained.load(checkpoint)
  text_vectors, text_rows = embeddings.read_all(out, "texts")
  assert text_rows == {"key": [1, 3], "text": ["a photo of a cat", "a diagram of a rocket"]}
  expected = jax.jit(lambda tokens: loaded.model.apply(
      loaded.variables, tokens, method=loaded.model.encode_text))(
          loaded.tokenize(text_rows["text"]))
  cosines = np.sum(text_vectors * np.asarray(expected), axis=-1)
  assert np.all(cosines > 0.99), cosines  # bfloat16 compute, float16 storage


def test_images_beyond_the_limits_are_skipped_and_listed(checkpoint, folder, tmp_path):
  """--max_image_pixels refuses an image from its header, --max_member_bytes a file before it is
  read whole: such images are skipped and listed, as undecodable ones are."""
  generated = sorted(os.path.join(folder, f"generated_{index}.png") for index in range(4))
  sizes = {path: os.path.getsize(path) for path in generated}
  limit = sorted(sizes.values())[1]  # two files pass it

  def embedded_and_skipped(**limits):
    out = str(tmp_path / "-".join(limits))
    embeddings.run(embeddings.Options(model=checkpoint, images=f"{folder}/generated_*.png",
                                      **limits), out)
    _, rows = embeddings.read_all(out)
    skipped = [json.loads(line) for line in open(os.path.join(out, "skipped.jsonl"))]
    return rows["key"], {entry["key"]: entry["why"] for entry in skipped}

  # 40 x 50, 50 x 50, 60 x 50 and 70 x 50 pixels
  assert embedded_and_skipped(max_image_pixels=2_500) == (
      generated[:2], {generated[2]: "over the pixel limit", generated[3]: "over the pixel limit"})
  assert embedded_and_skipped(max_member_bytes=limit) == (
      [path for path in generated if sizes[path] <= limit],
      {path: "no image" for path in generated if sizes[path] > limit})


def test_classify_gives_the_papers_zero_shot_probabilities(checkpoint, folder):
  """Against the probabilities computed here in float64 from the model's own features:
  80-template class embeddings, softmax of the scaled cosine similarities."""
  from clip_jax.evaluation import prompts  # pylint: disable=g-import-not-at-top
  labels = ["cat", "rocket", "cup of coffee"]
  images = [os.path.join(folder, "photos", name) for name in ("chelsea.png", "rocket.png",
                                                              "coffee.jpg")]
  probabilities = embeddings.Embedder(checkpoint).classify(images, labels,
                                                            prompts.templates("imagenet80"))

  loaded = pretrained.load(checkpoint)
  templates = prompts.templates("imagenet80")
  assert len(templates) == 80
  apply = lambda inputs, method: np.asarray(  # noqa: E731
      loaded.model.apply(loaded.variables, inputs, method=method), np.float64)
  text = apply(loaded.tokenize([t.format(label) for label in labels for t in templates]),
               loaded.model.encode_text).reshape(3, 80, -1)
  classes = text.mean(axis=1)
  classes /= np.linalg.norm(classes, axis=-1, keepdims=True)
  image = apply(loaded.preprocess([Image.open(path) for path in images]),
                loaded.model.encode_image)
  logits = np.exp(float(loaded.variables["params"]["logit_scale"])) * image @ classes.T
  expected = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
  np.testing.assert_allclose(probabilities, expected, atol=1e-5)
