"""The readers of each source: records, offsets to resume from, odd files, config errors."""

import io
import itertools
import os
import tarfile
import tracemalloc

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import doc_commands
from shard_files import write_tar

from clip_jax import settings
from input_pipeline.sources import csv_table
from input_pipeline.sources import file_lists
from input_pipeline.sources import tfds_datasets
from input_pipeline.sources import tfrecord
from input_pipeline.sources import webdataset


def read_all(reader):
  return list(reader)


class TestWebDataset:

  def test_members_are_grouped_by_key(self, tmp_path):
    path = str(tmp_path / "shard.tar")
    write_tar(path, [("a/", b""), ("a/001.jpg", b"J1"), ("a/001.txt", b"one"),
                     ("a/001.json", b"{}"), ("a/002.PNG", b"P2"), ("a/002.txt", b"two"),
                     ("003.webp", b"W3"), ("003.txt", b"three"), ("003.tar.gz", b"x")])
    records = [record for record, _ in webdataset.read_tar(path, 0)]
    assert records == [{"image": b"J1", "captions": [b"one"]},
                       {"image": b"P2", "captions": [b"two"]},
                       {"image": b"W3", "captions": [b"three"]}]

  def test_samples_missing_a_part_are_kept_empty(self, tmp_path):
    path = str(tmp_path / "shard.tar")
    write_tar(path, [("1.jpg", b"J1"), ("2.txt", b"only a caption"), ("3.jpg", b"J3"),
                     ("3.txt", b"\xff\xfe not utf-8"), ("4.gif", b"G"), ("4.txt", b"gif")])
    records = [record for record, _ in webdataset.read_tar(path, 0)]
    assert records == [{"image": b"J1", "captions": []},
                       {"image": b"", "captions": [b"only a caption"]},
                       {"image": b"J3", "captions": []},
                       {"image": b"", "captions": [b"gif"]}]

  def test_image_extensions_are_configurable_and_ordered(self, tmp_path):
    path = str(tmp_path / "shard.tar")
    write_tar(path, [("1.png", b"P"), ("1.jpg", b"J"), ("1.caption", b"c")])
    records = [record for record, _ in webdataset.read_tar(path, 0, ("jpg", "png"), "caption")]
    assert records == [{"image": b"J", "captions": [b"c"]}]

  def test_reading_from_a_returned_offset_gives_the_rest(self, tmp_path):
    path = str(tmp_path / "shard.tar")
    members = []
    for index in range(6):
      members += [(f"{index:03d}.jpg", os.urandom(700 + 300 * index)),
                  (f"{index:03d}.txt", f"caption {index}".encode())]
    write_tar(path, members)
    items = read_all(webdataset.read_tar(path, 0))
    assert len(items) == 6
    for cut, (_, offset) in enumerate(items):
      assert [r for r, _ in webdataset.read_tar(path, offset)] == [r for r, _ in items[cut + 1:]]

  def test_a_truncated_shard_ends_after_its_whole_samples(self, tmp_path):
    path = str(tmp_path / "shard.tar")
    write_tar(path, [("1.jpg", b"J1"), ("1.txt", b"c"), ("2.jpg", os.urandom(5000)),
                     ("2.txt", b"c")])
    data = (tmp_path / "shard.tar").read_bytes()
    (tmp_path / "shard.tar").write_bytes(data[:4000])
    assert [r for r, _ in webdataset.read_tar(path, 0)] == [{"image": b"J1", "captions": [b"c"]}]


  @pytest.mark.parametrize("tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT,
                                          tarfile.PAX_FORMAT])
  def test_long_and_unicode_names_read_as_tarfile_reads_them(self, tmp_path, tar_format):
    names = ["d/" + "x" * 90 + "/1.jpg", "d/" + "x" * 90 + "/1.txt", "caf\u00e9/2.jpg",
             "caf\u00e9/2.txt", "n" * 120 + ".jpg", "n" * 120 + ".txt"]
    if tar_format == tarfile.USTAR_FORMAT:  # ustar has no long base names or non-ASCII
      names = names[:2]
    path = str(tmp_path / "shard.tar")
    with tarfile.open(path, "w", format=tar_format) as archive:
      for number, name in enumerate(names):
        info = tarfile.TarInfo(name)
        info.size = 3 + number
        archive.addfile(info, io.BytesIO(bytes(range(3 + number))))
    with tarfile.open(path) as archive:
      expected = [(member.name, archive.extractfile(member).read()) for member in archive]
    samples = list(webdataset.read_samples(path))
    assert [(key + "." + extension, data) for key, members, _ in samples
            for extension, data in members.items()] == expected
    assert not list(webdataset.read_samples(path, samples[-1][2]))  # the end: nothing after it


  def test_links_sparse_files_and_oversized_members_are_skipped_unread(self, tmp_path, caplog):
    path = tmp_path / "shard.tar"
    big = os.urandom(4 << 20)
    write_tar(str(path), [("1.jpg", b"J1"), ("1.txt", b"one"), ("2.jpg", b"sparse"),
                          ("2.txt", b"two"), ("3.jpg", big), ("3.txt", b"three"),
                          ("5.jpg", b"J5"), ("5.txt", b"five")])
    with tarfile.open(path, "a") as archive:  # appended: a link named like an image
      link = tarfile.TarInfo("6.jpg")
      link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
      archive.addfile(link)
      archive.addfile(tarfile.TarInfo("6.txt"), io.BytesIO(b""))
    data = bytearray(path.read_bytes())
    header = data.index(b"2.jpg")  # a member's header starts with its name
    data[header + 156:header + 157] = b"S"  # GNU sparse: its data would be expanded
    data[header + 148:header + 156] = b" " * 8
    data[header + 148:header + 155] = b"%06o\0" % sum(data[header:header + 512])
    path.write_bytes(bytes(data))
    tracemalloc.start()
    records = [record for record, _ in webdataset.read_tar(str(path), 0)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    with tarfile.open(path) as archive:  # still a valid tar, with a sparse member
      assert [(member.name, member.type) for member in archive.getmembers()][2:4] == [
          ("2.jpg", tarfile.GNUTYPE_SPARSE), ("2.txt", tarfile.REGTYPE)]
    records_small_limit = [
        members for _, members, _ in webdataset.read_samples(str(path), 0, max_member_bytes=1024)]
    assert records == [{"image": b"J1", "captions": [b"one"]},
                       {"image": b"", "captions": [b"two"]},  # skipped and counted downstream
                       {"image": big, "captions": [b"three"]},
                       {"image": b"J5", "captions": [b"five"]},
                       {"image": b"", "captions": [b""]}]
    assert [sorted(members) for members in records_small_limit] == [
        ["jpg", "txt"], ["txt"], ["txt"], ["jpg", "txt"], ["txt"]]
    del records
    tracemalloc.start()
    for _ in webdataset.read_samples(str(path), 0, max_member_bytes=1024):
      pass
    # The reader's 1 MiB buffer and two 64 KiB chunks: far from the member's 4 MiB.
    assert tracemalloc.get_traced_memory()[1] < 1.5 * (1 << 20) < 4 * (1 << 20) < peak
    tracemalloc.stop()
    warnings = [record.getMessage() for record in caplog.records
                if "skipped" in record.getMessage()]
    assert warnings[0] == doc_commands.documented_message("docs/untrusted_files.md", (
        f"{path}: 2 members skipped unread (not regular files, or more than "
        f"data.webdataset.max_member_bytes={webdataset.MAX_MEMBER_BYTES} bytes), the first 2.jpg."))

  def test_other_file_systems_read_as_local_files(self, tmp_path):
    path = str(tmp_path / "shard.tar")
    write_tar(path, [(f"{index}.{extension}", os.urandom(300 * index))
                     for index in range(1, 9) for extension in ("jpg", "txt")])
    remote = "ram://test_sources/shard.tar"  # read through tf.io.gfile, like gs://
    tf.io.gfile.makedirs("ram://test_sources")
    tf.io.gfile.copy(path, remote, overwrite=True)
    local = list(webdataset.read_samples(path))
    assert list(webdataset.read_samples(remote)) == local
    assert list(webdataset.read_samples(remote, local[3][2])) == local[4:]


class TestFileLists:

  def test_braces_globs_and_lists(self, tmp_path):
    for index in range(4):
      (tmp_path / f"{index:05d}.tar").write_bytes(b"")
    base = str(tmp_path)
    braces = file_lists.expand(f"{base}/{{00001..00003}}.tar")
    assert braces == [f"{base}/{index:05d}.tar" for index in (1, 2, 3)]
    assert file_lists.expand(f"{base}/*.tar") == [f"{base}/{i:05d}.tar" for i in range(4)]
    assert file_lists.expand([f"{base}/00003.tar", f"{base}/0000[01].tar"]) == [
        f"{base}/00003.tar", f"{base}/00000.tar", f"{base}/00001.tar"]

  @pytest.mark.parametrize("pattern, message", [
      ("{0..5}.tar", r"'.*/5\.tar' does not exist"), ("*.tfrecord", "no file matches"),
  ])
  def test_missing_files_are_errors(self, tmp_path, pattern, message):
    for index in range(5):
      (tmp_path / f"{index}.tar").write_bytes(b"")
    with pytest.raises(ValueError, match=r"data\.webdataset\.files.*" + message):
      file_lists.expand(str(tmp_path / pattern), "data.webdataset.files")


def write_tfrecord(path, examples):
  with tf.io.TFRecordWriter(path) as writer:
    for features in examples:
      feature = {key: tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
                 for key, values in features.items()}
      writer.write(tf.train.Example(features=tf.train.Features(feature=feature))
                   .SerializeToString())


class TestTFRecord:

  def test_img2dataset_features_by_default_and_resume_offsets(self, tmp_path):
    path = str(tmp_path / "data.tfrecord")
    write_tfrecord(path, [{"jpg": [f"J{i}".encode()], "txt": [f"c{i}".encode()],
                           "key": [b"k"]} for i in range(5)])
    items = read_all(tfrecord.read_tfrecord(path, 0))
    assert [record for record, _ in items] == [
        {"image": f"J{i}".encode(), "captions": [f"c{i}".encode()]} for i in range(5)]
    for cut, (_, offset) in enumerate(items):
      assert [r for r, _ in tfrecord.read_tfrecord(path, offset)] == [
          r for r, _ in items[cut + 1:]]

  def test_configurable_features_several_captions_and_missing_ones(self, tmp_path):
    path = str(tmp_path / "data.tfrecord")
    write_tfrecord(path, [{"image/encoded": [b"I"], "captions": [b"a", b"b"]},
                          {"image/encoded": [b"I"]}, {"captions": [b"c"]}])
    records = [r for r, _ in tfrecord.read_tfrecord(path, 0, "image/encoded", "captions")]
    assert records == [{"image": b"I", "captions": [b"a", b"b"]},
                       {"image": b"I", "captions": []}, {"image": b"", "captions": [b"c"]}]

  def test_a_truncated_file_stops_reading_after_its_whole_records(self, tmp_path):
    path = str(tmp_path / "data.tfrecord")
    write_tfrecord(path, [{"jpg": [os.urandom(100)], "txt": [b"c"]}] * 3)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-50])
    assert len(read_all(tfrecord.read_tfrecord(path, 0))) == 2

  def test_an_unparsable_record_is_kept_empty(self, tmp_path):
    path = str(tmp_path / "data.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
      writer.write(b"\xff\xff not a protocol buffer")
    assert [r for r, _ in tfrecord.read_tfrecord(path, 0)] == [{"image": b"", "captions": []}]


class TestCsv:

  def test_rows_relative_paths_and_missing_images(self, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"A")
    (tmp_path / "table.tsv").write_text("filepath\ttitle\nimages/a.jpg\ta cat\nimages/b.jpg\t"
                                        "a dog\n")
    rows = csv_table.read_table(str(tmp_path / "table.tsv"))
    assert rows == [(str(tmp_path / "images" / "a.jpg"), "a cat"),
                    (str(tmp_path / "images" / "b.jpg"), "a dog")]
    assert read_all(csv_table.read_row(rows[0], 0)) == [
        ({"image": b"A", "captions": [b"a cat"]}, 1)]
    assert read_all(csv_table.read_row(rows[1], 0)) == [
        ({"image": b"", "captions": [b"a dog"]}, 1)]
    assert read_all(csv_table.read_row(rows[0], 1)) == []

  def test_unknown_column_names_the_key_and_the_columns(self, tmp_path):
    (tmp_path / "table.csv").write_text("path,caption\na.jpg,a cat\n")
    with pytest.raises(ValueError,
                       match=r"data\.csv\.image_column='filepath'.*allowed: path, caption"):
      csv_table.read_table(str(tmp_path / "table.csv"), separator=",")


def test_tfds_stream_through_mock_data():
  data = settings.data_settings(name="tfds", dataset="laion400m", split="train",
                                caption_feature="caption", seed=0, shuffle_window=4)
  with tfds.testing.mock_data(num_examples=6):
    stream = tfds_datasets.create_stream(data, process_index=0, process_count=1)
    items = list(itertools.islice(stream.iterate(), 8))
    records = [record for record, _ in items]
    # Resuming in the middle of the second window continues with the next record.
    resumed = [record for record, _ in itertools.islice(stream.iterate(items[4][1]), 3)]
  assert all(record["image"].startswith(b"\x89PNG") for record in records)  # still encoded
  assert all(len(record["captions"]) == 1 for record in records)
  assert len({record["image"] for record in records[:6]}) == 6  # one epoch: 6 distinct images
  assert resumed == records[5:8]


def test_tfds_caption_feature_paths():
  example = {"captions": {"text": np.array([b"a", b"b"], dtype=object)}, "caption": b"c"}
  assert list(np.asarray(tfds_datasets.feature(example, "captions/text")).reshape(-1)) == [
      b"a", b"b"]
  assert tfds_datasets.feature(example, "caption") == b"c"


@pytest.mark.parametrize("changes, parts, message", [
    # (and a plug-in's, where another test registered one in this process)
    (dict(name="laion"), {}, r"^data\.name='laion'; allowed: 'synthetic', 'webdataset', "
     r"'tfrecord', 'tfds', 'csv', 'mixture'(, '\w+')*\.$"),
    (dict(name="mixture"), dict(a=dict(name="synthetic")),
     r"^data\.sources\.a\.name='synthetic'; allowed: webdataset, tfrecord, tfds, csv(, \w+)*\.$"),
    (dict(name="mixture"), dict(a=dict(name="csv", weight=0.0)),
     r"^data\.sources\.a\.weight=0\.0; allowed: numbers > 0\.$"),
])
def test_bad_source_settings_name_the_key_value_and_allowed_values(changes, parts, message):
  config = settings.default_config()
  config.data.update(changes)
  for name, part in parts.items():
    config.data.sources[name] = settings.data_source(**part)
  with pytest.raises(ValueError, match=message):
    settings.parse(config)
