"""write_shards: tar and TFRecord layouts, sharding, determinism, the readers, the CLI."""

import io
import json
import os
import tarfile

import braceexpand
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from clip_jax import settings
import command_server
from input_pipeline import write_shards as ws
from input_pipeline.sources import synthetic
from input_pipeline.sources import tfrecord
from input_pipeline.sources import webdataset

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def encode_image(seed: int, fmt: str = "JPEG") -> bytes:
  pixels = np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format=fmt)
  return buffer.getvalue()


def read_tar(path):
  """[(name, bytes)] in file order."""
  with tarfile.open(path) as tar:
    return [(member.name, tar.extractfile(member).read()) for member in tar.getmembers()]


def samples_of(path):
  """{key: {extension: bytes}}, checking that each key's members are consecutive."""
  samples, seen = {}, []
  for name, data in read_tar(path):
    key, extension = name.split(".", 1)
    if not seen or seen[-1] != key:
      assert key not in samples, f"members of {key} are not consecutive in {path}"
      seen.append(key)
      samples[key] = {}
    samples[key][extension] = data
  return samples


def make_samples(count):
  return [ws.Sample(encode_image(i), "jpg", f"caption {i} café", {"index": i})
          for i in range(count)]


def test_shards_hold_samples_in_order_with_img2dataset_keys(tmp_path):
  samples = make_samples(7)
  paths = ws.write_shards(samples, str(tmp_path), samples_per_shard=3)
  assert paths == [str(tmp_path / f"0000{i}.tar") for i in range(3)]
  assert sorted(os.listdir(tmp_path)) == ["00000.tar", "00001.tar", "00002.tar"]
  shards = [samples_of(path) for path in paths]
  assert [len(shard) for shard in shards] == [3, 3, 1]
  assert list(shards[1]) == ["000010", "000011", "000012"]  # Shard 00001, index 0..2 (1 digit).
  written = [sample for shard in shards for sample in shard.values()]
  for sample, member in zip(samples, written):
    assert set(member) == {"jpg", "txt", "json"}
    assert member["jpg"] == sample.image
    assert member["txt"].decode("utf-8") == sample.caption
  metadata = json.loads(written[4]["json"])
  assert metadata == {"key": "000011", "caption": "caption 4 café", "index": 4}


def test_members_are_regular_files_with_fixed_headers_sorted_by_extension(tmp_path):
  [path] = ws.write_shards(make_samples(2), str(tmp_path))  # 10,000 per shard: 5 + 4 digits.
  with tarfile.open(path) as tar:
    members = tar.getmembers()
  assert [m.name for m in members] == ["000000000.jpg", "000000000.json", "000000000.txt",
                                       "000000001.jpg", "000000001.json", "000000001.txt"]
  assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.type) for m in members} == {
      (0, 0, 0, "", "", tarfile.REGTYPE)}


def test_output_is_deterministic(tmp_path):
  samples = make_samples(5)
  first = ws.write_shards(samples, str(tmp_path / "a"), samples_per_shard=2)
  second = ws.write_shards(samples, str(tmp_path / "b"), samples_per_shard=2)
  for path_a, path_b in zip(first, second, strict=True):
    assert open(path_a, "rb").read() == open(path_b, "rb").read()


def test_extensions_are_normalised_and_checked(tmp_path):
  png, webp = encode_image(0, "PNG"), encode_image(1, "WEBP")
  [path] = ws.write_shards([(png, "PNG", "a"), (webp, ".webp", "b"), (png, "jpeg", "c")],
                           str(tmp_path / "ok"))
  shard = samples_of(path)
  assert [sorted(sample) for sample in shard.values()] == [
      ["json", "png", "txt"], ["json", "txt", "webp"], ["jpg", "json", "txt"]]
  with pytest.raises(ValueError, match="'gif'.*allowed: jpg, jpeg, png, webp"):
    ws.write_shards([(png, "gif", "a")], str(tmp_path / "bad"))
  with pytest.raises(ValueError, match="samples_per_shard=0"):
    ws.write_shards([], str(tmp_path / "bad"), samples_per_shard=0)


def test_shard_pattern_expands_to_the_written_paths(tmp_path):
  paths = ws.write_shards(make_samples(5), str(tmp_path), samples_per_shard=2)
  pattern = ws.shard_pattern(str(tmp_path), len(paths))
  assert pattern == f"{tmp_path}/{{00000..00002}}.tar"
  assert list(braceexpand.braceexpand(pattern)) == paths
  assert ws.shard_pattern("/out", 1) == "/out/00000.tar"
  wide = list(braceexpand.braceexpand(ws.shard_pattern("/out", 100_002)))
  assert wide[-3:] == ["/out/99999.tar", "/out/100000.tar", "/out/100001.tar"]
  assert len(wide) == 100_002


def examples_of(path):
  """[{feature: bytes}] of a TFRecord file of tf.train.Example."""
  examples = []
  for data in tf.data.TFRecordDataset(path).as_numpy_iterator():
    features = tf.train.Example.FromString(data).features.feature
    examples.append({name: feature.bytes_list.value[0] for name, feature in features.items()})
  return examples


def test_tfrecord_shards_roll_over_with_img2dataset_names_and_features(tmp_path):
  samples = make_samples(5) + [ws.Sample(encode_image(5, "PNG"), "png", "a png")]
  paths = ws.write_shards(samples, str(tmp_path), samples_per_shard=4, output_format="tfrecord")
  assert paths == [str(tmp_path / "00000.tfrecord"), str(tmp_path / "00001.tfrecord")]
  assert sorted(os.listdir(tmp_path)) == ["00000.tfrecord", "00001.tfrecord"]
  shards = [examples_of(path) for path in paths]
  assert [len(shard) for shard in shards] == [4, 2]
  written = [example for shard in shards for example in shard]
  assert [example["key"] for example in written] == [
      b"000000", b"000001", b"000002", b"000003", b"000010", b"000011"]
  for sample, example in zip(samples, written):
    assert set(example) == {"jpg", "txt", "key", "json"}
    assert example["jpg"] == sample.image  # Named "jpg" even for the PNG, as img2dataset does.
    assert example["txt"].decode("utf-8") == sample.caption
  assert json.loads(written[4]["json"]) == {"key": "000010", "caption": "caption 4 café",
                                            "index": 4}
  pattern = ws.shard_pattern(str(tmp_path), len(paths), "tfrecord")
  assert pattern == f"{tmp_path}/{{00000..00001}}.tfrecord"
  assert list(braceexpand.braceexpand(pattern)) == paths
  with pytest.raises(ValueError, match="'gif'.*allowed: jpg"):
    ws.write_shards([(b"x", "gif", "a")], str(tmp_path / "bad"), output_format="tfrecord")
  with pytest.raises(ValueError, match="--format='zip'.*allowed: webdataset, tfrecord"):
    ws.write_shards(samples, str(tmp_path / "bad"), output_format="zip")


def test_tfrecord_output_is_deterministic(tmp_path):
  for name in ("a", "b"):
    ws.write_shards(make_samples(3), str(tmp_path / name), output_format="tfrecord")
  assert ((tmp_path / "a" / "00000.tfrecord").read_bytes()
          == (tmp_path / "b" / "00000.tfrecord").read_bytes())


@pytest.mark.parametrize("output_format, read_shard", [("webdataset", webdataset.read_tar),
                                                       ("tfrecord", tfrecord.read_tfrecord)])
def test_synthetic_samples_read_back_through_the_sources(tmp_path, output_format, read_shard):
  result = ws.run(str(tmp_path), 3, synthetic_samples=5, synthetic_image_size=16, seed=7,
                  output_format=output_format)
  assert result.num_samples == 5 and len(result.paths) == 2 and not result.skipped.total
  records = [record for path in result.paths for record, _ in read_shard(path, 0)]
  world = synthetic.World.from_settings(settings.Data(seed=7, image_size=16))
  rendered = [synthetic.render(world, "train", index) for index in range(5)]
  assert [record["captions"] for record in records] == [[r.caption.encode()] for r in rendered]
  for index, record in enumerate(records):
    assert Image.open(io.BytesIO(record["image"])).format == "JPEG"
    image = np.asarray(Image.open(io.BytesIO(record["image"]))).astype(int)
    assert image.shape == (16, 16, 3)
    errors = [np.abs(image - sample.image).mean() for sample in rendered]
    assert np.argmin(errors) == index  # Lossy, but the image is its own render's.


@pytest.fixture
def image_files(tmp_path):
  """Four images under tmp_path/images (one nested), as {relative path: bytes}."""
  files = {"a.jpg": encode_image(0), "b.png": encode_image(1, "PNG"),
           "sub/c.jpeg": encode_image(2), "sub/d.webp": encode_image(3, "WEBP")}
  for name, data in files.items():
    (tmp_path / "images" / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "images" / name).write_bytes(data)
  return files


def test_csv_rows_become_samples_and_unusable_rows_are_counted(tmp_path, image_files):
  absolute = tmp_path / "images" / "b.png"
  rows = ["filepath\ttitle\tother",
          "images/a.jpg\ta dog on a beach\tx",  # Relative to the CSV's directory.
          f"{absolute}\t  a red car  \ty",
          "images/missing.jpg\ta cat\tz",
          "images/sub/d.webp\t\tz",  # Empty caption.
          "images/notes.gif\ta gif\tz",
          "images/sub/c.jpeg\ta tree\tz"]
  (tmp_path / "data.tsv").write_text("\n".join(rows) + "\n")
  result = ws.run(str(tmp_path / "out"), 2, csv_path=str(tmp_path / "data.tsv"))
  assert result.num_samples == 3 and len(result.paths) == 2
  samples = {**samples_of(result.paths[0]), **samples_of(result.paths[1])}
  images = [next(data for ext, data in s.items() if ext not in ("txt", "json"))
            for s in samples.values()]
  assert images == [image_files["a.jpg"], image_files["b.png"], image_files["sub/c.jpeg"]]
  assert [s["txt"].decode() for s in samples.values()] == ["a dog on a beach", "a red car",
                                                           "a tree"]
  assert json.loads(samples["000010"]["json"])["source_path"] == str(tmp_path / "images/sub/c.jpeg")
  assert result.skipped.counts == {"missing image file": 1, "empty caption": 1,
                                   "unsupported extension": 1}
  assert result.skipped.examples["missing image file"] == [str(tmp_path / "images/missing.jpg")]
  assert "empty caption: 1 (e.g. " in result.skipped.summary()


def test_csv_separator_and_columns_are_configurable(tmp_path, image_files):
  (tmp_path / "data.csv").write_text('image,caption\nimages/a.jpg,"a dog, running"\n')
  result = ws.run(str(tmp_path / "out"), 10, csv_path=str(tmp_path / "data.csv"),
                  csv_separator=",", csv_image_key="image", csv_caption_key="caption")
  [sample] = samples_of(result.paths[0]).values()
  assert sample["jpg"] == image_files["a.jpg"] and sample["txt"] == b"a dog, running"
  with pytest.raises(ValueError, match=r"--csv_caption_key='title'.*allowed: image, caption"):
    ws.run(str(tmp_path / "out"), 10, csv_path=str(tmp_path / "data.csv"), csv_separator=",",
           csv_image_key="image")


def test_csv_header_may_have_a_bom_and_rows_are_labelled_by_line(tmp_path, image_files):
  rows = ["\ufefffilepath,title",
          "images/a.jpg,a dog",
          ",no image",
          "images/b.png",  # No caption column at all.
          '"images/sub/c.jpeg","a tree,',
          'tall"',  # A caption over two lines: the row ends on line 6.
          "gs://no-such-bucket-for-tests/x.zip,remote"]
  (tmp_path / "data.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
  result = ws.run(str(tmp_path / "out"), 10, csv_path=str(tmp_path / "data.csv"),
                  csv_separator=",")
  samples = list(samples_of(result.paths[0]).values())
  assert [s["txt"] for s in samples] == [b"a dog", b"a tree,\ntall"]
  assert result.skipped.counts == {"missing image path": 1, "missing caption": 1,
                                   "unsupported extension": 1}
  csv_path = tmp_path / "data.csv"
  assert result.skipped.examples["missing image path"] == [f"{csv_path}:3"]
  assert result.skipped.examples["missing caption"] == [f"{csv_path}:4"]
  assert result.skipped.examples["unsupported extension"] == ["gs://no-such-bucket-for-tests/x.zip"]


def test_image_folder_uses_sidecar_captions_and_counts_the_rest(tmp_path, image_files):
  folder = tmp_path / "images"
  (folder / "a.txt").write_text("a dog\n")
  (folder / "sub" / "c.txt").write_text("a tree")
  (folder / "sub" / "d.txt").write_text("  \n")  # Empty caption.
  (folder / "readme.md").write_text("not an image")
  result = ws.run(str(tmp_path / "out"), 10, image_folder=str(folder))
  samples = list(samples_of(result.paths[0]).values())
  assert [s["txt"] for s in samples] == [b"a dog", b"a tree"]
  assert samples[0]["jpg"] == image_files["a.jpg"]
  assert samples[1]["jpg"] == image_files["sub/c.jpeg"]
  assert result.skipped.counts == {"missing caption": 1, "empty caption": 1,
                                   "unsupported extension": 1}
  assert result.skipped.examples["missing caption"] == [str(folder / "b.png")]


def test_undecodable_text_is_skipped_or_named_with_its_line(tmp_path, image_files):
  """A caption file that is not UTF-8 skips its image; a table that is not UTF-8 is refused
  naming the file and the line."""
  folder = tmp_path / "images"
  (folder / "a.txt").write_text("a dog\n")
  (folder / "b.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
  result = ws.run(str(tmp_path / "out"), 10, image_folder=str(folder))
  assert [s["txt"] for s in samples_of(result.paths[0]).values()] == [b"a dog"]
  assert result.skipped.counts["caption not UTF-8"] == 1
  assert result.skipped.examples["caption not UTF-8"] == [str(folder / "b.png")]
  table = tmp_path / "data.tsv"
  table.write_bytes(  # the \xe9 is byte 50
      "filepath\ttitle\nimages/a.jpg\ta dog\nimages/b.png\tcaf\xe9\n".encode("latin-1"))
  with pytest.raises(ValueError, match=rf"^--csv={table}, line 3: not UTF-8 \(invalid "
                     r"continuation byte at byte 50\); save the table as UTF-8\.$"):
    ws.run(str(tmp_path / "out2"), 10, csv_path=str(table))


def test_bad_flag_combinations_name_the_flags(tmp_path):
  exactly_one = "exactly one of --csv, --image_folder and --synthetic"
  with pytest.raises(ValueError, match=exactly_one):
    ws.run(str(tmp_path / "out"), 10)
  with pytest.raises(ValueError, match=exactly_one):
    ws.run(str(tmp_path / "out"), 10, csv_path="x.tsv", image_folder=str(tmp_path))
  with pytest.raises(ValueError, match=exactly_one + r"; got --csv='x.tsv', .*--synthetic=3"):
    ws.run(str(tmp_path / "out"), 10, csv_path="x.tsv", synthetic_samples=3)
  with pytest.raises(ValueError, match=exactly_one):
    ws.run(str(tmp_path / "out"), 10, image_folder=str(tmp_path), synthetic_samples=3)
  with pytest.raises(ValueError, match="--synthetic=0: need"):
    ws.run(str(tmp_path / "out"), 10, synthetic_samples=0)
  with pytest.raises(ValueError, match="--format='zip'.*allowed: webdataset, tfrecord"):
    ws.run(str(tmp_path / "out"), 10, synthetic_samples=1, output_format="zip")
  with pytest.raises(ValueError, match="--image_folder=.*no such directory"):
    ws.run(str(tmp_path / "out"), 10, image_folder=str(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match="no usable samples"):
    ws.run(str(tmp_path / "out"), 10, image_folder=str(tmp_path))


def test_command_line(tmp_path, image_files):
  (tmp_path / "images" / "a.txt").write_text("a dog")
  (tmp_path / "images" / "b.txt").write_text("a cat")
  command = ["-m", "input_pipeline.write_shards", f"--output_dir={tmp_path / 'out'}",
             "--samples_per_shard=1"]
  done = command_server.run_python(command + [f"--image_folder={tmp_path / 'images'}"],
                                   cwd=REPO_ROOT, timeout=120)
  assert done.returncode == 0, done.stderr
  assert "Wrote 2 samples in 2 shard(s)" in done.stdout
  assert f"--config.data.webdataset.files='{tmp_path / 'out'}/{{00000..00001}}.tar'" in done.stdout
  assert "missing caption: 2" in done.stdout  # sub/c.jpeg and sub/d.webp.
  assert sorted(os.listdir(tmp_path / "out")) == ["00000.tar", "00001.tar"]
  failed = command_server.run_python(command + ["--csv=x.tsv", f"--image_folder={tmp_path}"],
                                     cwd=REPO_ROOT, timeout=120)
  assert failed.returncode != 0
  assert "Need exactly one of --csv, --image_folder and --synthetic" in failed.stderr
  synthetic_out = tmp_path / "synthetic"
  done = command_server.run_python(
      ["-m", "input_pipeline.write_shards", "--synthetic=3", "--synthetic_image_size=8",
       "--samples_per_shard=2", "--format=tfrecord", f"--output_dir={synthetic_out}"],
      cwd=REPO_ROOT, timeout=120)
  assert done.returncode == 0, done.stderr
  assert ("--config.data.name=tfrecord --config.data.tfrecord.files="
          f"'{synthetic_out}/{{00000..00001}}.tfrecord'") in done.stdout
  assert sorted(os.listdir(synthetic_out)) == ["00000.tfrecord", "00001.tfrecord"]
