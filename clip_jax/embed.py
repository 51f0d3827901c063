"""Embeds an image collection, and captions, with a pretrained CLIP:

  python -m clip_jax.embed --model=<converted checkpoint or workdir> \
      --images=<folder | glob | WebDataset shards> [--texts=<file, a caption a line>] --out=<dir>

Images get the checkpoint's own evaluation view (`CLIPConfig.preprocessing`) in a tf.data
pipeline and go to the devices as uint8, in batches split over every local device. The output is
read without clip_jax (numpy and any Parquet reader):

  <out>/embed.json              the flags, the model's step and weights' and --texts' SHA-256
                                (a resume with others is refused), its architecture and
                                preprocessing, totals
  <out>/inputs.txt              the image inputs in order (files or tar shards), fixed at the start
  <out>/images/00000.npy        [n, E] L2-normalised image embeddings of input shard 0 (float16)
  <out>/images/00000.parquet    its n rows: key, source (file or tar), offset (of the sample in
                                the tar; -1 for a file), caption (a WebDataset sample's, or "")
  <out>/images/00000.json       the shard's counts and the inputs that did not decode; written
                                last: a shard is done when this file exists
  <out>/texts/00000.*           the same for --texts (key: the line number; text)

A shard is the unit of resumption: a killed run starts again at the first shard that is not done,
so that no input is embedded twice or lost. Unreadable images are skipped, counted and listed.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# pylint: disable=g-import-not-at-top,wrong-import-position
from typing import Any

from absl import app
from absl import flags
from absl import logging

from clip_jax import cli
from clip_jax import embeddings
from clip_jax import files
from clip_jax import workdir
from clip_jax.models import configs


def summary(result: dict[str, Any], out: str) -> str:
  lines = []
  for kind, totals in result["totals"].items():
    this_run = result["this_run"][kind]
    line = (f"{kind}: {totals['embedded']} embedded in {totals['shards']} shards "
            f"({this_run['embedded']} in this run")
    if this_run["shards_done_before"]:
      line += f", {this_run['shards_done_before']} shards done before"
    line += ")"
    if kind == "images":
      line += f", {totals['skipped']} skipped (listed in {files.path(out) / 'skipped.jsonl'})"
    lines.append(line)
  return "\n".join(lines + [f"Wrote {files.path(out)}"])


_MODEL = flags.DEFINE_string("model", None, "A converted checkpoint or a training workdir.")
_IMAGES = flags.DEFINE_string("images", "", "A folder of images (searched recursively), a glob "
                              "or brace pattern of image files, or WebDataset .tar shards.")
_TEXTS = flags.DEFINE_string("texts", "", "A text file, one caption a line.")
_OUT = flags.DEFINE_string("out", None, "Output folder; a run into a folder it left resumes.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", list(configs.DTYPES), "Compute dtype.")
_OUTPUT_DTYPE = flags.DEFINE_enum("output_dtype", "float16",
                                  list(embeddings.OUTPUT_DTYPES), "dtype of the stored embeddings.")
_FILES_PER_SHARD = flags.DEFINE_integer("files_per_shard",
                                        embeddings.Options.files_per_shard,
                                        "Image files (or lines of --texts) per output shard; a "
                                        "WebDataset input shard is one output shard.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", embeddings.Options.batch_size,
                                   "Images or texts encoded at once, split over the devices.")
_LIMITS = embeddings.define_limit_flags()
_BREAK_LOCK = workdir.define_break_lock_flag("--out folder")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax's restore messages would bury the progress bar.
  options = embeddings.Options(model=_MODEL.value, images=_IMAGES.value, texts=_TEXTS.value,
                               dtype=_DTYPE.value, output_dtype=_OUTPUT_DTYPE.value,
                               files_per_shard=_FILES_PER_SHARD.value,
                               batch_size=_BATCH_SIZE.value, **_LIMITS())
  try:
    result = embeddings.run(options, _OUT.value, break_lock=_BREAK_LOCK.value)
  except (workdir.WorkdirBusy, workdir.SettingsChanged) as error:
    cli.refuse(error)
  print(summary(result, _OUT.value))


if __name__ == "__main__":
  flags.mark_flags_as_required(["model", "out"])
  app.run(main)
