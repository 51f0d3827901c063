"""Seconds per `clip_jax.search` query against the size of the collection: exact search (a
matrix product per chunk of the index, then a top-k), on an index laid out as `clip_jax.embed`
writes it, of random unit vectors.

  python -m benchmarks.search
  python -m benchmarks.search --sizes=1000,10000 --no_record

A query's time covers what `clip_jax.search` does after encoding the query: reading the index's
embeddings and rows from disk (from the page cache: each size is searched once before it is
timed, which also compiles the chunk's product) and ranking them. The query's own encoding (one
text through the text tower) is left out: it does not grow with the collection.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks import common


def write_index(folder: str, size: int, dim: int, shard_rows: int) -> int:
  """An index of `size` random unit vectors (float16, as clip_jax.embed stores them) in shards of
  `shard_rows`; its size on disk in bytes."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from clip_jax import embeddings  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(size)
  for index, start in enumerate(range(0, size, shard_rows)):
    rows = min(shard_rows, size - start)
    vectors = rng.standard_normal((rows, dim), np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    keys = [f"images/{start + row:09d}.jpg" for row in range(rows)]
    embeddings.write_shard(folder, "images", index, vectors.astype(np.float16),
                           {"key": keys, "source": keys}, {"embedded": rows})
  return sum(entry.stat().st_size for entry in os.scandir(os.path.join(folder, "images")))


def seconds_per_search(folder: str, queries, k: int, repeats: int) -> float:
  from clip_jax import embeddings  # pylint: disable=g-import-not-at-top
  embeddings.top_k(queries, folder, k)  # compiles, and brings the index into the page cache
  start = time.perf_counter()
  for _ in range(repeats):
    embeddings.top_k(queries, folder, k)
  return (time.perf_counter() - start) / repeats


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", default="10000,100000,1000000",
                      help="Collection sizes (images), comma-separated.")
  parser.add_argument("--dim", type=int, default=512, help="Embedding width (ViT-B/32: 512).")
  parser.add_argument("--queries", default="1,16", help="Queries per search, comma-separated.")
  parser.add_argument("--k", type=int, default=10)
  parser.add_argument("--shard_rows", type=int, default=100_000,
                      help="Rows per index shard (clip_jax.embed: a WebDataset tar, or "
                           "--files_per_shard files).")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--no_record", action="store_true", help="Do not append to RESULTS.md.")
  return parser.parse_args()


def main():
  args = parse_args()
  import numpy as np  # pylint: disable=g-import-not-at-top
  query_counts = [int(count) for count in args.queries.split(",")]
  rows = []
  for size in (int(size) for size in args.sizes.split(",")):
    with tempfile.TemporaryDirectory(prefix="search_benchmark.") as folder:
      disk = write_index(folder, size, args.dim, args.shard_rows)
      row = [f"{size:,}", f"{disk / 2**20:,.0f}"]
      for count in query_counts:
        queries = np.random.default_rng(count).standard_normal((count, args.dim), np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        row.append(f"{seconds_per_search(folder, queries, args.k, args.repeats):.3f}")
      rows.append(row)
      print(" | ".join(row), flush=True)
  notes = (f"Exact top-{args.k} over random unit vectors of width {args.dim} stored as float16 in "
           f"shards of {args.shard_rows:,} rows (embeddings .npy, rows .parquet), read from the "
           f"page cache; mean of {args.repeats} searches after a first one.")
  common.report("Search: seconds per clip_jax.search against the collection size",
                ["images", "index on disk (MiB)",
                 *[f"seconds, {count} quer{'y' if count == 1 else 'ies'}"
                   for count in query_counts]], rows, notes, record=not args.no_record)


if __name__ == "__main__":
  main()
