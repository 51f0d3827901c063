"""The whole pipeline on real files: exactly once, bad samples skipped and counted, exact resume."""

import collections
import itertools
import json

import numpy as np
import pytest
import tensorflow as tf

import input_pipeline
from clip_jax import settings
from input_pipeline import tokenizers
from input_pipeline.sources import webdataset
from shard_files import bad_images, encode, good_images, photo, write_tar

IMAGE_SIZE = 32
CONTEXT_LENGTH = 16


DATA = dict(name="webdataset", image_size=IMAGE_SIZE, context_length=CONTEXT_LENGTH,
            tokenizer="clip_bpe", seed=0, cycle_length=2, shuffle_window=5)


def data_settings(**changes) -> settings.Data:
  return settings.data_settings(**{**DATA, **changes})


def caption_ids(data):
  """Maps a tokenised caption 'sample N' back to N."""
  tokenizer = tokenizers.create_tokenizer(data)

  def ids(texts):
    lookup = {row.tobytes(): number for number, row in enumerate(
        tokenizer.tokenize([f"sample {number}" for number in range(1000)]))}
    return [lookup[row.tobytes()] for row in texts]

  return ids


def write_numbered_shards(directory, shard_sizes, extra=()):
  """Shards of samples 'sample N' with small JPEGs; `extra` members appended to the first shard."""
  number, paths = 0, []
  for shard, size in enumerate(shard_sizes):
    members = []
    for _ in range(size):
      members += [(f"{number:06d}.jpg", encode(photo(20, 24, seed=number), "JPEG")),
                  (f"{number:06d}.txt", f"sample {number}".encode())]
      number += 1
    if shard == 0:
      members += list(extra)
    paths.append(str(directory / f"{shard:05d}.tar"))
    write_tar(paths[-1], members)
  return f"{directory}/{{00000..{len(shard_sizes) - 1:05d}}}.tar", number


def take(iterator, count):
  return list(itertools.islice(iterator, count))


@pytest.mark.parametrize("process_count", [1, 2, 4])
def test_one_epoch_gives_every_sample_once_across_processes(tmp_path, process_count):
  files, total = write_numbered_shards(tmp_path, [6] * 8)  # 48 samples
  data = data_settings(files=files)
  ids = caption_ids(data)
  global_batch_size = 8
  local_batch_size = global_batch_size // process_count
  seen = collections.Counter()
  for process_index in range(process_count):
    iterator = input_pipeline.create_dataset(data, global_batch_size=global_batch_size,
                                             process_index=process_index,
                                             process_count=process_count)
    per_process = total // process_count  # shards divide evenly: 8 shards of 6
    for batch in take(iterator, per_process // local_batch_size):
      seen.update(ids(batch["text"]))
  assert set(seen) == set(range(total)) and set(seen.values()) == {1}


def test_batches_have_clip_shapes_dtypes_and_ranges(tmp_path):
  files, _ = write_numbered_shards(tmp_path, [8])
  batch = next(input_pipeline.create_dataset(data_settings(files=files), global_batch_size=4))
  assert batch.keys() == {"image", "text"}
  assert batch["image"].shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
  assert batch["image"].dtype == np.uint8  # standardised by the model, on the accelerator
  assert batch["image"].min() < 64 and batch["image"].max() > 192
  assert batch["text"].shape == (4, CONTEXT_LENGTH) and batch["text"].dtype == np.int32


def test_bad_samples_are_skipped_and_counted_and_good_ones_all_kept(tmp_path):
  jpeg = encode(photo(20, 20), "JPEG")
  members = []
  for name, (extension, data) in bad_images().items():
    members += [(f"{name}.{extension}", data), (f"{name}.txt", b"sample 999")]
  members += [("no_caption.jpg", jpeg), ("empty_caption.jpg", jpeg), ("empty_caption.txt", b""),
              ("blank_caption.jpg", jpeg), ("blank_caption.txt", b" \n\t "),
              ("latin1_caption.jpg", jpeg), ("latin1_caption.txt", "caf\xe9".encode("latin-1")),
              ("no_image.txt", b"sample 999")]
  bad_count = len(bad_images()) + 5
  good_numbers = []
  for number, (name, (extension, data)) in enumerate(good_images().items(), 100):
    members += [(f"{name}.{extension}", data), (f"{name}.txt", f"sample {number}".encode())]
    good_numbers.append(number)
  members += [("last.jpg", jpeg), ("last.txt", b"sample 200"), ("last2.jpg", jpeg),
              ("last2.txt", b"sample 201"), ("last3.jpg", jpeg), ("last3.txt", b"sample 202")]
  good_numbers += [200, 201, 202]
  assert len(good_numbers) % 4 == 0
  path = str(tmp_path / "00000.tar")
  write_tar(path, members)
  # No shuffling, so the bad samples come first, and all are behind us after the good ones.
  unshuffled = data_settings(files=path, cycle_length=1, shuffle_window=1)
  iterator = input_pipeline.create_dataset(unshuffled, global_batch_size=4)
  batches = take(iterator, len(good_numbers) // 4)
  seen = [number for batch in batches for number in caption_ids(unshuffled)(batch["text"])]
  assert sorted(seen) == good_numbers  # every good sample once, whatever its format
  assert iterator.skipped_samples == bad_count
  assert iterator.get_state()["records"] == bad_count + len(good_numbers)
  take(iterator, len(good_numbers) // 4)  # the second epoch skips them again
  assert iterator.skipped_samples == 2 * bad_count


def test_the_data_settings_limits_skip_and_count(tmp_path):
  """data.max_image_pixels refuses images from their header, data.webdataset.max_member_bytes
  passes over members unread: their samples are skipped and counted, the others all kept."""
  members, good_numbers = [], []
  for number in range(12):
    height = (16, 20, 16)[number % 3]  # 16 x 16 (256 pixels) or 20 x 16 (320)
    caption = f"sample {number}".encode() if number % 4 else b"sample 999 " * 100  # 1,100 bytes
    members += [(f"{number:06d}.jpg", encode(photo(height, 16, seed=number), "JPEG")),
                (f"{number:06d}.txt", caption)]
    if height == 16 and number % 4:
      good_numbers.append(number)
  path = str(tmp_path / "00000.tar")
  write_tar(path, members)
  limited = data_settings(files=path, cycle_length=1, shuffle_window=1, max_image_pixels=300,
                          max_member_bytes=1_000)
  iterator = input_pipeline.create_dataset(limited, global_batch_size=len(good_numbers))
  assert sorted(caption_ids(limited)(next(iterator)["text"])) == good_numbers
  assert iterator.skipped_samples == 12 - len(good_numbers)


def numbered_settings(tmp_path, **changes):
  files, _ = write_numbered_shards(tmp_path, [7, 3, 9, 5, 4])
  return data_settings(files=files, **changes)


@pytest.mark.parametrize("process_count", [1, 2])
def test_resume_mid_epoch_continues_with_the_next_batch(tmp_path, process_count):
  data = numbered_settings(tmp_path)
  global_batch_size = 4

  def iterators(state=None):
    return [input_pipeline.create_dataset(data, global_batch_size=global_batch_size,
                                          process_index=index, process_count=process_count,
                                          state=state)
            for index in range(process_count)]

  reference = [take(iterator, 9) for iterator in iterators()]  # 28 samples: past one epoch
  interrupted = iterators()
  for iterator in interrupted:
    take(iterator, 3)
  state = json.loads(json.dumps(
      input_pipeline.combine_states([iterator.get_state() for iterator in interrupted],
                                     interrupted[0].source_digest)))
  for process, iterator in enumerate(iterators(state)):
    for actual, expected in zip(take(iterator, 6), reference[process][3:]):
      np.testing.assert_array_equal(actual["text"], expected["text"])
      np.testing.assert_array_equal(actual["image"], expected["image"])


def test_resume_on_another_process_count_is_refused(tmp_path):
  data = numbered_settings(tmp_path)
  iterator = input_pipeline.create_dataset(data, global_batch_size=4)
  next(iterator)
  state = input_pipeline.combine_states([iterator.get_state()], iterator.source_digest)
  with pytest.raises(ValueError, match="saved by 1 processes, this run has 2"):
    input_pipeline.create_dataset(data, global_batch_size=4, process_count=2, state=state)


def test_augmentation_differs_between_epochs(tmp_path):
  files, _ = write_numbered_shards(tmp_path, [4])
  data = data_settings(files=files, crop_scale=(0.3, 0.5))
  ids = caption_ids(data)
  first, second = take(input_pipeline.create_dataset(data, global_batch_size=4), 2)
  by_id = [dict(zip(ids(batch["text"]), batch["image"])) for batch in (first, second)]
  assert all(not np.array_equal(by_id[0][n], by_id[1][n]) for n in range(4))


def test_tfrecord_and_csv_sources_train_batches(tmp_path):
  path = str(tmp_path / "data.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    for number in range(6):
      feature = {"jpg": [encode(photo(20, 20, number), "JPEG")], "txt": [f"sample {number}"
                                                                         .encode()]}
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          key: tf.train.Feature(bytes_list=tf.train.BytesList(value=value))
          for key, value in feature.items()})).SerializeToString())
  (tmp_path / "images").mkdir()
  rows = ["filepath\ttitle"]
  for number in range(6):
    (tmp_path / "images" / f"{number}.png").write_bytes(encode(photo(20, 20, number), "PNG"))
    rows.append(f"images/{number}.png\tsample {number}")
  (tmp_path / "table.tsv").write_text("\n".join(rows) + "\n")
  for data in (data_settings(name="tfrecord", files=path),
               data_settings(name="csv", file=str(tmp_path / "table.tsv"))):
    batch = next(input_pipeline.create_dataset(data, global_batch_size=6))
    assert sorted(caption_ids(data)(batch["text"])) == list(range(6))


def test_mixture_draws_from_every_source_and_resumes(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  files_a, _ = write_numbered_shards(tmp_path / "a", [5, 5])
  files_b, _ = write_numbered_shards(tmp_path / "b", [5])
  data = data_settings(name="mixture", sources={"a": data_settings(files=files_a, weight=2.0),
                                                "b": data_settings(files=files_b)})
  reference = take(input_pipeline.create_dataset(data, global_batch_size=4), 6)
  interrupted = input_pipeline.create_dataset(data, global_batch_size=4)
  take(interrupted, 2)
  state = input_pipeline.combine_states([interrupted.get_state()],
                                        interrupted.source_digest)
  resumed = take(input_pipeline.create_dataset(data, global_batch_size=4, state=state), 4)
  for actual, expected in zip(resumed, reference[2:]):
    np.testing.assert_array_equal(actual["text"], expected["text"])


def test_mock_tfds_source_trains_batches():
  data = data_settings(name="tfds", dataset="laion400m", split="train", caption_feature="caption",
                       mock_examples=8)
  batch = next(input_pipeline.create_dataset(data, global_batch_size=4))
  assert batch["image"].shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)


def test_a_failing_reader_stops_the_run_instead_of_ending_the_data(tmp_path, monkeypatch):
  files, _ = write_numbered_shards(tmp_path, [8])

  def broken(path, offset, **options):
    raise OSError(f"{path}: connection reset")
    yield  # pylint: disable=unreachable

  monkeypatch.setattr(webdataset, "read_tar", broken)
  with pytest.raises(tf.errors.OpError, match="connection reset"):
    next(input_pipeline.create_dataset(data_settings(files=files), global_batch_size=4))


def test_batches_do_not_depend_on_how_records_are_chunked(tmp_path, monkeypatch):
  """Chunks are decoded in parallel: the order, the crops and the dropped records must not
  depend on how many records a chunk holds or which thread decodes it."""
  bad = [(f"{name}.{extension}", data) for name, (extension, data) in bad_images().items()]
  bad += [(f"{name.split('.')[0]}.txt", b"sample 999") for name, _ in bad]
  files, _ = write_numbered_shards(tmp_path, [7, 3, 9, 5, 4], extra=bad)
  data = data_settings(files=files)
  reference = take(input_pipeline.create_dataset(data, global_batch_size=4), 12)
  for chunk in (1, 3):
    monkeypatch.setattr(input_pipeline, "RECORD_CHUNK", chunk)
    batches = take(input_pipeline.create_dataset(data, global_batch_size=4), 12)
    for batch, expected in zip(batches, reference, strict=True):
      np.testing.assert_array_equal(batch["image"], expected["image"])
      np.testing.assert_array_equal(batch["text"], expected["text"])
