"""create_dataset and create_eval_images: batches, process sharding, exact resume, errors."""

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import input_pipeline
from clip_jax import settings

GLOBAL_BATCH_SIZE = 8
DATA = settings.data_settings(name="synthetic", seed=0, image_size=32, context_length=16,
                              tokenizer="words")


def take(iterator, count):
  return list(itertools.islice(iterator, count))


def assert_batches_equal(actual, expected):
  assert len(actual) == len(expected)
  for actual_batch, expected_batch in zip(actual, expected):
    assert actual_batch.keys() == expected_batch.keys()
    for key in expected_batch:
      np.testing.assert_array_equal(actual_batch[key], expected_batch[key], err_msg=key)


@pytest.fixture(scope="module")
def reference():
  """The first batches of a fresh single-process stream."""
  return take(input_pipeline.create_dataset(DATA, global_batch_size=GLOBAL_BATCH_SIZE), 4)


def test_batches_have_clip_shapes_dtypes_and_ranges(reference):
  batch = reference[0]
  assert batch["image"].shape == (GLOBAL_BATCH_SIZE, 32, 32, 3)
  assert batch["image"].dtype == np.uint8  # standardised by the model, on the accelerator
  assert batch["image"].min() < 64 and batch["image"].max() > 192  # the full pixel range is used
  assert batch["text"].shape == (GLOBAL_BATCH_SIZE, 16) and batch["text"].dtype == np.int32


def test_every_image_of_the_stream_is_new(reference):
  images = np.concatenate([batch["image"] for batch in reference])
  assert len({image.tobytes() for image in images}) == len(images)


def test_fresh_streams_are_identical(reference):
  again = input_pipeline.create_dataset(DATA, global_batch_size=GLOBAL_BATCH_SIZE)
  assert_batches_equal(take(again, len(reference)), reference)


@pytest.mark.parametrize("process_count", [2, 4])
def test_processes_split_each_global_batch(reference, process_count):
  per_process = [
      take(input_pipeline.create_dataset(DATA, global_batch_size=GLOBAL_BATCH_SIZE,
                                         process_index=index, process_count=process_count), 2)
      for index in range(process_count)]
  for step in range(2):
    parts = [batches[step] for batches in per_process]
    assert parts[0]["image"].shape[0] == GLOBAL_BATCH_SIZE // process_count
    joined = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    assert_batches_equal([joined], [reference[step]])


def test_state_after_k_batches_resumes_with_batch_k_plus_one(reference):
  iterator = input_pipeline.create_dataset(DATA, global_batch_size=GLOBAL_BATCH_SIZE)
  take(iterator, 2)
  state = json.loads(json.dumps(input_pipeline.combine_states([iterator.get_state()], None)))
  assert state["processes"][0]["position"] == [2 * GLOBAL_BATCH_SIZE]
  resumed = input_pipeline.create_dataset(DATA, global_batch_size=GLOBAL_BATCH_SIZE, state=state)
  assert_batches_equal(take(resumed, 2), reference[2:])
  assert resumed.get_state()["position"] == [4 * GLOBAL_BATCH_SIZE]
  assert resumed.skipped_samples == 0


def test_resume_onto_more_processes(reference):
  state = input_pipeline.combine_states(
      [{"samples": 24, "records": 24, "position": [3 * GLOBAL_BATCH_SIZE]}], None)
  second_half = input_pipeline.create_dataset(
      DATA, global_batch_size=GLOBAL_BATCH_SIZE, process_index=1, process_count=2, state=state)
  np.testing.assert_array_equal(next(second_half)["text"],
                                reference[3]["text"][GLOBAL_BATCH_SIZE // 2:])


def test_eval_images_are_labelled_and_deterministic():
  def eval_batches():
    return list(input_pipeline.create_eval_images(DATA, num_images=10, batch_size=4))

  batches = eval_batches()
  assert [len(batch["image"]) for batch in batches] == [4, 4, 2]
  assert batches[0]["image"].dtype == np.uint8 and batches[0]["shape"].dtype == np.int32
  heldout = np.concatenate([batch["heldout"] for batch in batches])
  np.testing.assert_array_equal(heldout, np.arange(10) % 2 == 1)
  assert_batches_equal(eval_batches(), batches)


def test_eval_images_are_not_training_images(reference):
  evaluation = next(input_pipeline.create_eval_images(DATA, num_images=8, batch_size=8))
  training = {image.tobytes() for batch in reference for image in batch["image"]}
  assert not any(image.tobytes() in training for image in evaluation["image"])


@pytest.mark.parametrize("arguments, message", [
    (dict(global_batch_size=6, process_count=4), r"global_batch_size=6.*multiples of 4"),
    (dict(process_index=2, process_count=2), r"process_index=2.*allowed: 0\.\.1"),
    (dict(state={"batches": 3}), r"need \{'processes'"),
])
def test_bad_arguments_name_the_key_value_and_allowed_values(arguments, message):
  arguments = {"global_batch_size": GLOBAL_BATCH_SIZE, **arguments}
  with pytest.raises(ValueError, match=message):
    input_pipeline.create_dataset(DATA, **arguments)


@pytest.mark.parametrize("key, value, message", [
    # (and a plug-in's, where another test registered one in this process)
    ("name", "laion", r"^data\.name='laion'; allowed: 'synthetic', 'webdataset', 'tfrecord', "
                      r"'tfds', 'csv', 'mixture'(, '\w+')*\.$"),
    ("tokenizer", "bpe", r"^data\.tokenizer='bpe'; allowed: 'clip_bpe', 'sentencepiece', "
                         r"'siglip', 'gemma', 'words'\.$"),
])
def test_bad_data_settings_name_the_key_value_and_allowed_values(key, value, message):
  config = settings.default_config()
  config.data[key] = value
  with pytest.raises(ValueError, match=message):
    settings.parse(config)


def test_eval_images_need_synthetic_data():
  with pytest.raises(ValueError, match=r"data\.name='webdataset'.*allowed: synthetic"):
    input_pipeline.create_eval_images(dataclasses.replace(DATA, name="webdataset"), num_images=4,
                                      batch_size=4)


def test_a_process_with_running_pipelines_still_exits():
  """tf.data threads running Python would deadlock interpreter shutdown without the exit hook."""
  script = textwrap.dedent("""
      import input_pipeline
      from clip_jax import settings
      config = settings.data_settings(name="synthetic", seed=0, image_size=64, context_length=16,
                                      tokenizer="words")
      training = input_pipeline.create_dataset(config, global_batch_size=256)
      next(training)
      evaluation = input_pipeline.create_eval_images(config, num_images=512, batch_size=64)
      next(evaluation)
  """)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  result = subprocess.run([sys.executable, "-c", script], cwd=root, timeout=120,
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-2000:]
