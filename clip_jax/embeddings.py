"""Embeddings of image collections and captions by a pretrained CLIP, stored so that other tools
read them without clip_jax; `python -m clip_jax.embed` is the command line (its docstring shows
the layout). clip_jax.search, clip_jax.classify and clip_jax.filter_shards build on the
same `Embedder`.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
from typing import Any, Callable, Iterator, Sequence

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from clip_jax import checkpoint
from clip_jax import encoding
from clip_jax import files
from clip_jax import pretrained
from clip_jax import settings
from clip_jax import sharding
from clip_jax import image_preparation
from clip_jax import workdir
from clip_jax.evaluation import zero_shot
from clip_jax.models import clip as clip_model
from clip_jax.models import configs

MANIFEST = "embed.json"
INPUTS = "inputs.txt"
KINDS = ("images", "texts")
OUTPUT_DTYPES = ("float16", "float32")
CHUNK_ROWS = 65_536  # of an index per matrix product in `top_k`; padded, so that it compiles once


@dataclasses.dataclass(frozen=True)
class Options:
  """What decides the output: a resumed run must be given the same."""
  model: str
  images: str = ""
  texts: str = ""
  dtype: str = "float32"  # compute
  output_dtype: str = "float16"
  files_per_shard: int = 10_000  # image files, or lines of --texts, per output shard
  batch_size: int = 256
  # The bounds on a sample of training's data settings (docs/data.md), with their defaults.
  max_member_bytes: int = settings.MAX_MEMBER_BYTES
  max_image_pixels: int = settings.MAX_IMAGE_PIXELS


def define_limit_flags() -> Callable[[], dict[str, int]]:
  """The command-line flags of `Options`' limits on a sample, for the tools that read image
  collections; returns a function that gives their values by the Options' field names."""
  member = flags.DEFINE_integer(
      "max_member_bytes", Options.max_member_bytes, "Tar members and image files larger than "
      "this are skipped unread (and listed as skipped).")
  pixels = flags.DEFINE_integer(
      "max_image_pixels", Options.max_image_pixels, "Images whose header declares more pixels "
      "are skipped before decoding (and listed as skipped).")
  return lambda: {"max_member_bytes": member.value, "max_image_pixels": pixels.value}


def shard_name(index: int) -> str:
  return f"{index:05d}"


def _done_path(out: str, kind: str, index: int):
  return files.path(out) / kind / f"{shard_name(index)}.json"


def is_done(out: str, kind: str, index: int) -> bool:
  return _done_path(out, kind, index).exists()


def write_shard(out: str, kind: str, index: int, embeddings: np.ndarray,
                rows: dict[str, Sequence[Any]], report: dict[str, Any]) -> None:
  """The shard's embeddings and rows, then its report: the mark that the shard is done."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  directory = files.path(out) / kind
  array = io.BytesIO()
  np.save(array, embeddings)
  files.write_bytes(directory / f"{shard_name(index)}.npy", array.getvalue())
  table = io.BytesIO()
  pq.write_table(pa.table(rows), table)
  files.write_bytes(directory / f"{shard_name(index)}.parquet", table.getvalue())
  files.write_text(_done_path(out, kind, index), json.dumps(report, indent=1))


def read_shards(out: str, kind: str = "images") -> Iterator[tuple[np.ndarray, dict[str, list]]]:
  """(embeddings [n, E] as stored, {column: values}) of every done shard, in order."""
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  directory = files.path(out) / kind
  indices = sorted(int(path.name.split(".")[0]) for path in directory.glob("*.json"))
  for index in indices:
    with (directory / f"{shard_name(index)}.npy").open("rb") as file:
      embeddings = np.load(file)
    with (directory / f"{shard_name(index)}.parquet").open("rb") as file:
      rows = pq.read_table(file).to_pydict()
    yield embeddings, rows


def read_all(out: str, kind: str = "images") -> tuple[np.ndarray, dict[str, list]]:
  """Every done shard's embeddings [N, E] (float32) and rows, concatenated."""
  embeddings, rows = [], {}
  for shard_embeddings, shard_rows in read_shards(out, kind):
    embeddings.append(shard_embeddings.astype(np.float32))
    for column, values in shard_rows.items():
      rows.setdefault(column, []).extend(values)
  if not embeddings:
    raise FileNotFoundError(f"{out} holds no finished {kind} shard: run clip_jax.embed first.")
  return np.concatenate(embeddings), rows


class Embedder:
  """A pretrained model's image and text encoders on every local device, and its views."""

  def __init__(self, model_path: str, dtype: str = "float32", batch_size: int = 256):
    # A workdir's newest step, named, so that the provenance of outputs says which it was.
    self.step = (max(checkpoint.saved_steps(model_path), default=None)
                 if pretrained.is_workdir(model_path) else None)
    loaded = pretrained.load(model_path, step=self.step)
    self.config = dataclasses.replace(loaded.model.config, dtype=dtype)
    self.model = clip_model.CLIP(self.config)
    self.tokenize = loaded.tokenize
    self.batch_size = batch_size
    # The learned inverse temperature, which scales cosine similarities into logits.
    self.logit_scale = float(np.exp(loaded.variables["params"]["logit_scale"]))
    mesh = sharding.create_mesh(devices=jax.local_devices())
    self._variables = jax.device_put(loaded.variables, sharding.replicated(mesh))
    # numpy inputs [b, ...] -> unit features [b, E], split over the local devices.
    self.encode_image_views, self.encode_tokens = encoding.make_encoders(
        self.model, self._variables, mesh)

  @functools.cached_property
  def weights_digest(self) -> str:
    """The SHA-256 of the weights (`pretrained.variables_digest`), for the outputs' provenance:
    computed when a tool records it (embed, filter_shards), not by every user (search)."""
    return pretrained.variables_digest(jax.device_get(self._variables))

  @property
  def image_size(self) -> int:
    return self.config.vision.image_size

  @property
  def view(self) -> image_preparation.Preprocessing:
    return self.config.preprocessing

  def encode_images(self, views: np.ndarray) -> np.ndarray:
    """uint8 evaluation views [n, S, S, 3] -> unit features [n, E] (float32)."""
    return encoding.encode_in_batches(self.encode_image_views, views, self.batch_size)

  def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
    """Texts -> unit features [n, E] (float32)."""
    return encoding.encode_in_batches(self.encode_tokens, self.tokenize(list(texts)),
                                       self.batch_size)

  def classify(self, images: Sequence[str], labels: Sequence[str],
               templates: Sequence[str]) -> np.ndarray:
    """[len(images), len(labels)]: each image file's zero-shot probability of each label, with
    a prompt ensemble of `templates` ("a photo of a {}." ...)."""
    classes = zero_shot.class_embeddings(self.encode_tokens, self.tokenize, labels, templates,
                                         batch_size=self.batch_size)  # [C, E]
    return zero_shot.label_probabilities(self.encode_image_files(images), classes,
                                         self.logit_scale)

  def encode_image_files(self, paths: Sequence[str]) -> np.ndarray:
    """Image files -> unit features [n, E]; a file that does not decode raises, naming it."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    images = []
    for path in paths:
      try:
        with Image.open(path) as image:
          images.append(np.asarray(image.convert("RGB")))
      except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not an image that can be read ({error}).") from None
    return self.encode_images(pretrained.image_views(images, self.image_size, self.view))


def provenance(embedder: Embedder, texts: str = "") -> dict[str, Any]:
  """What outputs were made with, beyond the flags: the checkpoint's step (a workdir's; None for a
  converted checkpoint) and the digests of its weights and of the --texts file."""
  return {"step": embedder.step, "weights_sha256": embedder.weights_digest,
          "texts_sha256": files.sha256(texts) if texts else None}


def check_output(out: str, record: str, given: dict[str, Any]) -> dict[str, Any]:
  """The run recorded in `out`/`record`, refused (workdir.SettingsChanged, naming each change)
  unless it is `given`; else `given`, recorded as the run's."""
  path = files.path(out) / record
  stored = workdir.check_resume(path, given, remedy=(
      f"Use a new --out, or the model, inputs and flags recorded in {path}."))
  if stored is None:
    files.write_text(path, json.dumps(given, indent=2))
    return given
  return stored


def _check_manifest(out: str, options: Options, embedder: Embedder) -> dict[str, Any]:
  """The run's manifest: written at the start; the same flags, weights and texts required to
  resume."""
  return check_output(out, MANIFEST, {
      "options": dataclasses.asdict(options), "provenance": provenance(embedder, options.texts),
      "model": configs.config_to_dict(embedder.config),
      "embedding_dim": embedder.config.embed_dim})


def _image_shards(out: str, images: str, files_per_shard: int):
  """The shards of the collection, as listed when the run started (inputs.txt): files added
  to a folder later do not move a resumed run's shards."""
  from input_pipeline import image_collections  # pylint: disable=g-import-not-at-top
  listing = files.path(out) / INPUTS
  if listing.exists():
    lines = listing.read_text().splitlines()
    is_tar, inputs = lines[0] == "tar", lines[1:]
  else:
    inputs, is_tar = image_collections.list_inputs(images)
    files.write_text(listing, "\n".join(["tar" if is_tar else "files", *inputs]) + "\n")
  return image_collections.make_shards(inputs, is_tar, files_per_shard), is_tar


def embed_images(embedder: Embedder, options: Options, out: str, progress) -> dict[str, int]:
  """Every image shard not yet done; returns the counts of this run."""
  shards, is_tar = _image_shards(out, options.images, options.files_per_shard)
  if not is_tar:
    progress.total = sum(len(shard.files) for shard in shards)
  root = options.images if os.path.isdir(options.images) else ""
  counts = {"embedded": 0, "skipped": 0, "shards_done_before": 0}
  for shard in shards:
    if is_done(out, "images", shard.index):
      counts["shards_done_before"] += 1
      inputs = json.loads(_done_path(out, "images", shard.index).read_text())["inputs"]
      progress.update(inputs)
    else:
      inputs = _embed_image_shard(embedder, options, out, shard, root, counts, progress)
    if is_tar and progress.total is None:  # after the first shard: an estimate, for the ETA
      progress.total = inputs * len(shards)
      progress.refresh()
  return counts


def _embed_image_shard(embedder: Embedder, options: Options, out: str, shard, root: str,
                       counts: dict[str, int], progress) -> int:
  """Embeds and writes one shard; returns how many inputs it had."""
  from input_pipeline import image_collections  # pylint: disable=g-import-not-at-top
  samples = list(image_collections.read_shard(shard, root, options.max_member_bytes))
  embeddings, embedded = [], []
  for indices, batch_views in image_collections.views(samples, embedder.image_size, embedder.view,
                                                options.batch_size, options.max_image_pixels):
    embeddings.append(embedder.encode_images(batch_views))
    embedded.extend(indices.tolist())
    progress.update(len(indices))
  skipped = sorted(set(range(len(samples))) - set(embedded))
  progress.update(len(skipped))
  kept = [samples[index] for index in embedded]
  write_shard(out, "images", shard.index,
              np.concatenate(embeddings or [np.zeros((0, embedder.config.embed_dim))]
                             ).astype(options.output_dtype),
              {"key": [s.key for s in kept], "source": [s.source for s in kept],
               "offset": [s.offset for s in kept], "caption": [s.caption for s in kept]},
              {"inputs": len(samples), "embedded": len(kept), "skipped": [
                  {"key": samples[index].key, "source": samples[index].source,
                   "why": image_collections.skip_reason(samples[index],
                                                        options.max_image_pixels)}
                  for index in skipped]})
  counts["embedded"] += len(kept)
  counts["skipped"] += len(skipped)
  return len(samples)


def embed_texts(embedder: Embedder, options: Options, out: str, progress) -> dict[str, int]:
  """Every shard of --texts' lines (empty lines left out) not yet done."""
  with files.path(options.texts).open() as file:
    lines = [(number, line.strip()) for number, line in enumerate(file, start=1) if line.strip()]
  progress.total = len(lines)
  counts = {"embedded": 0, "shards_done_before": 0}
  for index, start in enumerate(range(0, len(lines), options.files_per_shard)):
    chunk = lines[start:start + options.files_per_shard]
    if is_done(out, "texts", index):
      counts["shards_done_before"] += 1
    else:
      write_shard(out, "texts", index,
                  embedder.encode_texts([text for _, text in chunk]).astype(options.output_dtype),
                  {"key": [number for number, _ in chunk], "text": [text for _, text in chunk]},
                  {"inputs": len(chunk), "embedded": len(chunk), "skipped": []})
      counts["embedded"] += len(chunk)
    progress.update(len(chunk))
  return counts


def run(options: Options, out: str, *, break_lock: bool = False) -> dict[str, Any]:
  """Embeds what `options` names into `out`, holding its lock (clip_jax.workdir), resuming what
  a previous run left; returns the totals over all shards (also written to the manifest) and
  writes skipped.jsonl."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  if not options.images and not options.texts:
    raise ValueError("Nothing to embed: give --images, --texts or both.")
  if options.output_dtype not in OUTPUT_DTYPES:
    raise ValueError(f"--output_dtype={options.output_dtype!r}; allowed: "
                     f"{', '.join(OUTPUT_DTYPES)}.")
  with workdir.Lock(out, break_lock=break_lock):
    embedder = Embedder(options.model, options.dtype, options.batch_size)
    manifest = _check_manifest(out, options, embedder)
    this_run = {}
    for kind, embed in (("images", embed_images), ("texts", embed_texts)):
      if not getattr(options, kind):
        continue
      with tqdm(unit=kind[:-1], desc=f"Embedding {kind}", dynamic_ncols=True,
                mininterval=1.0) as progress:
        this_run[kind] = embed(embedder, options, out, progress)
    totals = {kind: _totals(out, kind) for kind in KINDS if getattr(options, kind)}
    skipped = [json.dumps(entry) for report in reports(out, "images")
               for entry in report["skipped"]]
    files.write_text(files.path(out) / "skipped.jsonl", "".join(f"{line}\n" for line in skipped))
    files.write_text(files.path(out) / MANIFEST, json.dumps(
        {**manifest, "totals": totals}, indent=2))
    return {"this_run": this_run, "totals": totals}


def reports(out: str, kind: str) -> list[dict[str, Any]]:
  """The reports of every done shard of `kind`, in order."""
  directory = files.path(out) / kind
  return [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]


def _totals(out: str, kind: str) -> dict[str, int]:
  done = reports(out, kind)
  return {"shards": len(done), "inputs": sum(report["inputs"] for report in done),
          "embedded": sum(report["embedded"] for report in done),
          "skipped": sum(len(report["skipped"]) for report in done)}


def encode_queries(embedder: Embedder, queries: Sequence[str]) -> np.ndarray:
  """Unit features [Q, E] of the queries, in order: files as images, the rest as texts."""
  is_image = [os.path.isfile(query) for query in queries]
  features = np.zeros((len(queries), embedder.config.embed_dim), np.float32)
  images = [query for query, image in zip(queries, is_image) if image]
  texts = [query for query, image in zip(queries, is_image) if not image]
  if images:
    features[np.flatnonzero(is_image)] = embedder.encode_image_files(images)
  if texts:
    features[np.flatnonzero(~np.array(is_image))] = embedder.encode_texts(texts)
  return features


@functools.partial(jax.jit, static_argnames="k")
def _chunk_top_k(queries: jax.Array, chunk: jax.Array, valid: jax.Array,
                 k: int) -> tuple[jax.Array, jax.Array]:
  """(scores [Q, k], row indices [Q, k]) of a chunk [C, E]; rows past `valid` never win."""
  scores = queries @ chunk.astype(jnp.float32).T  # [Q, C]
  scores = jnp.where(jnp.arange(chunk.shape[0]) < valid, scores, -jnp.inf)
  return jax.lax.top_k(scores, k)


def top_k(queries: np.ndarray, index: str, k: int, kind: str = "images",
          chunk_rows: int = CHUNK_ROWS) -> tuple[np.ndarray, list[list[dict[str, Any]]]]:
  """The k stored rows most similar to each query [Q, E]: (scores [Q, k'], rows), k' = min(k,
  the index's size), best first; each row is the index's record (key, source, ...)."""
  best_scores = np.full((len(queries), 0), -np.inf, np.float32)
  best_rows: list[list[dict[str, Any]]] = [[] for _ in queries]
  chunk_k = min(k, chunk_rows)
  for embeddings, rows in _chunks(index, kind, chunk_rows):
    padded = np.zeros((chunk_rows, embeddings.shape[1]), embeddings.dtype)
    padded[:len(embeddings)] = embeddings
    scores, positions = jax.device_get(_chunk_top_k(
        jnp.asarray(queries, jnp.float32), padded, len(embeddings), chunk_k))
    merged_scores = np.concatenate([best_scores, scores], axis=1)  # [Q, k' + chunk_k]
    order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
    for query, query_order in enumerate(order):
      candidates = best_rows[query] + [
          {column: values[position] for column, values in rows.items()} if position < len(
              embeddings) else None for position in positions[query]]
      best_rows[query] = [candidates[i] for i in query_order]
    best_scores = np.take_along_axis(merged_scores, order, axis=1)
  keep = np.isfinite(best_scores).all(axis=0)
  return best_scores[:, keep], [[row for row, kept in zip(rows, keep) if kept]
                                for rows in best_rows]


def _chunks(index: str, kind: str, chunk_rows: int):
  """The index's shards regrouped into chunks of at most `chunk_rows` rows."""
  pending, pending_rows = [], {}
  for embeddings, rows in read_shards(index, kind):
    for start in range(0, len(embeddings), chunk_rows):
      part = embeddings[start:start + chunk_rows]
      if sum(map(len, pending)) + len(part) > chunk_rows:
        yield np.concatenate(pending), pending_rows
        pending, pending_rows = [], {}
      pending.append(part)
      for column, values in rows.items():
        pending_rows.setdefault(column, []).extend(values[start:start + chunk_rows])
  if pending:
    yield np.concatenate(pending), pending_rows
