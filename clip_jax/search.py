"""Searches an embedded collection (clip_jax.embed's output) with texts and images:

  python -m clip_jax.search --index=<embed output> "a dog on a beach" query.jpg [--k=8]
      [--grid=results.png]

A query that names an existing file is an image query (embedded with the index's model and
preprocessing); anything else is text. The search is exact: the queries' unit features against
every stored embedding, a matrix product over chunks of the index with a running top k, so that
memory stays at one chunk whatever the collection's size. `--grid` draws a contact sheet: a row
per query, its results left to right with their cosine similarity, for a person to look at.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# pylint: disable=g-import-not-at-top,wrong-import-position
import io
import json
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from clip_jax import embeddings
from clip_jax import files

def read_image(row: dict[str, Any]) -> np.ndarray:
  """The pixels (uint8 [H, W, 3]) of an index row's image: its file, or its sample in a tar."""
  from PIL import Image
  from input_pipeline import image_collections
  data = image_collections.read_sample_image(row["source"], row["offset"])
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("RGB"))


def draw_grid(queries: Sequence[str], scores: np.ndarray, rows: list[list[dict[str, Any]]],
              path: str) -> None:
  """A contact sheet: a row per query, its results with their scores and keys."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  columns = max(1, scores.shape[1])
  figure, axes = plt.subplots(len(queries), columns, squeeze=False,
                              figsize=(2.2 * columns, 2.6 * len(queries)))
  for query_index, query in enumerate(queries):
    axes[query_index, 0].set_ylabel(_short(os.path.basename(query) if os.path.isfile(query)
                                           else query, 30), fontsize=9)
    for rank in range(columns):
      axis = axes[query_index, rank]
      axis.set_xticks([])
      axis.set_yticks([])
      if rank < len(rows[query_index]):
        row = rows[query_index][rank]
        axis.imshow(read_image(row))
        axis.set_title(f"{scores[query_index, rank]:.3f}\n{_short(str(row['key']), 24)}",
                       fontsize=8)
  figure.tight_layout()
  files.save_figure(figure, path, dpi=100)
  plt.close(figure)


def _short(text: str, length: int) -> str:
  return text if len(text) <= length else text[:length - 1] + "…"


_INDEX = flags.DEFINE_string("index", None, "The output folder of clip_jax.embed.")
_MODEL = flags.DEFINE_string("model", None, "The model that embeds the queries; by default the "
                             "index's. Another model's features do not compare with the index's.")
_K = flags.DEFINE_integer("k", 5, "Results per query.")
_KIND = flags.DEFINE_enum("kind", "images", list(embeddings.KINDS), "Which embeddings to search.")
_GRID = flags.DEFINE_string("grid", None, "A PNG to draw the results into (images only).")


def main(argv):
  queries = argv[1:]
  if not queries:
    raise app.UsageError("Give one or more queries: texts, or paths of images.")
  logging.set_verbosity(logging.WARNING)
  manifest = json.loads(files.read_text(files.path(_INDEX.value) / embeddings.MANIFEST))
  model = _MODEL.value or manifest["options"]["model"]
  embedder = embeddings.Embedder(model, batch_size=max(len(queries), 1))
  scores, rows = embeddings.top_k(embeddings.encode_queries(embedder, queries), _INDEX.value,
                                 _K.value, _KIND.value)
  for query, query_scores, query_rows in zip(queries, scores, rows):
    print(f"\n{query}")
    for rank, (score, row) in enumerate(zip(query_scores, query_rows), start=1):
      where = row.get("source") or row.get("text", "")
      print(f"  {rank:>3}  {score:.4f}  {row['key']}  {where}")
  if _GRID.value:
    if _KIND.value != "images":
      raise app.UsageError("--grid draws images: search --kind=images.")
    draw_grid(queries, scores, rows, _GRID.value)
    print(f"\nWrote {_GRID.value}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["index"])
  app.run(main)
