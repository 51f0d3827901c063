"""CLIP-score filtering of WebDataset shards (DataComp's "CLIP score" baseline, LAION's curation):

  python -m clip_jax.filter_shards --model=<checkpoint> --in='shards/{00000..00099}.tar' \
      --out=<dir> (--min_score=0.28 | --keep_fraction=0.3)

A sample's score is the cosine similarity of its image and its caption under the model (each with
the checkpoint's own preprocessing and tokenizer). Two passes, each resumable shard by shard:

1. Scoring: `<out>/scores/00000.{npy,parquet,json}` per input shard, as clip_jax.embed writes an
   index (the image embeddings, rows with key, offset, caption and score, the shard's report).
2. Writing: `<out>/shards/<input name>.tar` per input shard, the kept samples with all their
   members in their order, and their score added to the sample's JSON member ("clip_score"; a
   new `json` member if there was none). `--keep_fraction` sets the threshold from every score
   once pass 1 is complete; `<out>/filter.json` records it, so that a resumed run keeps it, with
   the flags and the weights scored with (a resume with others is refused).

Each output file is written whole, then renamed: a killed run leaves finished shards, and the same
command continues, so that every kept sample is written exactly once. `<out>/report.json` gives
the counts (read, scored, unscorable: no caption, no image, an image over the pixel limit or one
that does not decode; kept) and
`<out>/scores.png` the histogram of the scores with the threshold.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# pylint: disable=g-import-not-at-top,wrong-import-position
import collections
import io
import json
import tarfile
from typing import Any

from absl import app
from absl import flags
from absl import logging
import numpy as np

from clip_jax import cli
from clip_jax import embeddings
from clip_jax import files
from clip_jax import workdir
from input_pipeline import image_collections

SETTINGS = "filter.json"
SCORE_KEY = "clip_score"


def score_shard(embedder: embeddings.Embedder, shard: image_collections.Shard, out: str,
                batch_size: int, limits: dict[str, int]) -> None:
  """Pass 1 for one input shard: every sample with a caption and a decodable image scored;
  `limits` as `embeddings.Options` has them."""
  samples = list(image_collections.read_shard(shard, "", limits["max_member_bytes"]))
  with_caption = [index for index, sample in enumerate(samples) if sample.caption]
  image_features, scored = [], []
  for indices, views in image_collections.views([samples[i] for i in with_caption],
                                                embedder.image_size, embedder.view, batch_size,
                                                limits["max_image_pixels"]):
    image_features.append(embedder.encode_images(views))
    scored.extend(with_caption[i] for i in indices)
  dim = embedder.config.embed_dim
  image_features = np.concatenate(image_features or [np.zeros((0, dim), np.float32)])
  caption_features = (embedder.encode_texts([samples[i].caption for i in scored]) if scored
                      else np.zeros((0, dim), np.float32))
  scores = np.sum(image_features * caption_features, axis=-1)  # cosine: both are unit vectors
  kept = [samples[i] for i in scored]
  embeddings.write_shard(
      out, "scores", shard.index, image_features.astype(np.float16),
      {"key": [s.key for s in kept], "offset": [s.offset for s in kept],
       "caption": [s.caption for s in kept], "score": scores.tolist()},
      {"inputs": len(samples), "embedded": len(kept), "skipped": [
          {"key": samples[i].key, "why": "no caption" if not samples[i].caption else
           image_collections.skip_reason(samples[i], limits["max_image_pixels"])}
          for i in sorted(set(range(len(samples))) - set(scored))]})


def all_scores(out: str) -> np.ndarray:
  return np.concatenate([np.asarray(rows["score"], np.float64)
                         for _, rows in embeddings.read_shards(out, "scores")])


def threshold(scores: np.ndarray, min_score: float | None, keep_fraction: float | None) -> float:
  """The lowest score kept: `min_score`, or the one that keeps `keep_fraction` of the scored."""
  if min_score is not None:
    return float(min_score)
  if not scores.size:
    return float("inf")
  return float(np.quantile(scores, 1 - keep_fraction, method="higher"))


def write_kept(shard: image_collections.Shard, scores: dict[str, list], minimum: float,
               path: str, max_member_bytes: int) -> int:
  """Pass 2 for one input shard: its kept samples, in order, to a new tar; returns their number."""
  keep = {key: score for key, score in zip(scores["key"], scores["score"]) if score >= minimum}
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode="w") as archive:
    for sample in image_collections.read_shard(shard, "", max_member_bytes):
      if sample.key not in keep:
        continue
      members = dict(sample.members)
      metadata = json.loads(members["json"]) if "json" in members else {}
      members["json"] = json.dumps({**metadata, SCORE_KEY: keep[sample.key]}).encode()
      for extension, data in members.items():
        info = tarfile.TarInfo(f"{sample.key}.{extension}")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
  files.write_bytes(path, buffer.getvalue())
  return len(keep)


def run(model: str, inputs: str, out: str, *, min_score: float | None = None,
        keep_fraction: float | None = None, batch_size: int = 256,
        max_member_bytes: int = embeddings.Options.max_member_bytes,
        max_image_pixels: int = embeddings.Options.max_image_pixels,
        break_lock: bool = False) -> dict[str, Any]:
  """Both passes over the shards `inputs` names, holding the lock of `out` (clip_jax.workdir),
  resuming what a previous run left; returns the report (also written to report.json, with the
  histogram in scores.png). Samples beyond the limits (`embeddings.Options`) are unscorable."""
  from tqdm import tqdm
  if (min_score is None) == (keep_fraction is None):
    raise ValueError("Give exactly one of --min_score and --keep_fraction.")
  if keep_fraction is not None and not 0 < keep_fraction <= 1:
    raise ValueError(f"--keep_fraction={keep_fraction}; allowed: 0 < keep_fraction <= 1.")
  paths, is_tar = image_collections.list_inputs(inputs)
  if not is_tar:
    raise ValueError(f"--in={inputs!r} names no .tar shards; allowed: WebDataset shards.")
  by_name = collections.defaultdict(list)
  for path in paths:  # each is written to shards/<its name>
    by_name[os.path.basename(path)].append(path)
  if shared := [named for named in by_name.values() if len(named) > 1]:
    raise ValueError(f"--in={inputs!r} names shards of the same name, which would be written to "
                     f"one output file: {', '.join(' and '.join(named) for named in shared)}; "
                     "allowed: shards whose names differ (filter each folder into its own --out).")
  with workdir.Lock(out, break_lock=break_lock):
    shards = image_collections.make_shards(paths, True, 1)
    limits = {"max_member_bytes": max_member_bytes, "max_image_pixels": max_image_pixels}
    embedder = embeddings.Embedder(model, batch_size=batch_size)
    settings = embeddings.check_output(out, SETTINGS, {
        "model": model, "provenance": embeddings.provenance(embedder), "in": paths,
        "min_score": min_score, "keep_fraction": keep_fraction, **limits})
    for shard in tqdm(shards, desc="Scoring", unit="shard", dynamic_ncols=True):
      if not embeddings.is_done(out, "scores", shard.index):
        score_shard(embedder, shard, out, batch_size, limits)
    scores = all_scores(out)
    if "threshold" not in settings:
      settings = {**settings, "threshold": threshold(scores, min_score, keep_fraction)}
      files.write_text(files.path(out) / SETTINGS, json.dumps(settings, indent=2))
    minimum = settings["threshold"]
    kept = 0
    score_shards = list(embeddings.read_shards(out, "scores"))
    for shard, (_, shard_scores) in tqdm(list(zip(shards, score_shards)), desc="Writing",
                                         unit="shard", dynamic_ncols=True):
      path = files.path(out) / "shards" / os.path.basename(shard.files[0])
      if path.exists():
        kept += sum(score >= minimum for score in shard_scores["score"])
      else:
        kept += write_kept(shard, shard_scores, minimum, path, max_member_bytes)
    reports = embeddings.reports(out, "scores")
    unscorable: dict[str, int] = {}
    for report in reports:
      for entry in report["skipped"]:
        unscorable[entry["why"]] = unscorable.get(entry["why"], 0) + 1
    report = {"shards": len(shards), "samples": sum(r["inputs"] for r in reports),
              "scored": int(scores.size), "unscorable": unscorable, "threshold": minimum,
              "kept": int(kept),
              "kept_fraction_of_scored": kept / scores.size if scores.size else 0}
    files.write_text(files.path(out) / "report.json", json.dumps(report, indent=2))
    _plot_histogram(scores, minimum, files.path(out) / "scores.png")
    return report


def _plot_histogram(scores: np.ndarray, minimum: float, path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  figure, axis = plt.subplots(figsize=(6, 3.5))
  axis.hist(scores, bins=50, color="tab:blue")
  axis.axvline(minimum, color="tab:red", label=f"kept from {minimum:.4f}")
  axis.set_xlabel("CLIP score (image-caption cosine similarity)")
  axis.set_ylabel("samples")
  axis.legend()
  figure.tight_layout()
  files.save_figure(figure, path, dpi=100)
  plt.close(figure)


_MODEL = flags.DEFINE_string("model", None, "A converted checkpoint or a training workdir.")
_IN = flags.DEFINE_string("in", None, "WebDataset shards: a brace pattern, glob or list.")
_OUT = flags.DEFINE_string("out", None, "Output folder; a run into a folder it left resumes.")
_MIN_SCORE = flags.DEFINE_float("min_score", None, "Keep samples scoring at least this.")
_KEEP_FRACTION = flags.DEFINE_float("keep_fraction", None,
                                    "Keep this fraction of the scored samples, the best.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Images or captions encoded at once.")
_LIMITS = embeddings.define_limit_flags()
_BREAK_LOCK = workdir.define_break_lock_flag("--out folder")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    report = run(_MODEL.value, _IN.value, _OUT.value, min_score=_MIN_SCORE.value,
                 keep_fraction=_KEEP_FRACTION.value, batch_size=_BATCH_SIZE.value,
                 break_lock=_BREAK_LOCK.value, **_LIMITS())
  except (workdir.WorkdirBusy, workdir.SettingsChanged) as error:
    cli.refuse(error)
  print(f"Kept {report['kept']} of {report['scored']} scored samples (of {report['samples']} in "
        f"{report['shards']} shards) with a CLIP score of at least {report['threshold']:.4f}; "
        f"unscorable: {report['unscorable'] or 'none'}.")
  print(f"Wrote {files.path(_OUT.value) / 'shards'}, report.json and scores.png")


if __name__ == "__main__":
  flags.mark_flags_as_required(["model", "in", "out"])
  app.run(main)
