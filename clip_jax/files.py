"""One file-system layer for what runs write and read: workdirs, checkpoints, sweeps, evaluations.

A workdir may be local or in a bucket (`gs://bucket/runs/b32` on a Cloud TPU VM). Everything
goes through etils.epath, the layer Orbax already uses for its checkpoints: gs:// is served by
TensorFlow's GCS file system (or by gcsfs with EPATH_USE_TF=false), s3:// and az:// by fsspec,
though Orbax checkpoints only to local and gs:// paths.
"""

from __future__ import annotations

import hashlib
import os
import uuid

from etils import epath

REMOTE_SCHEMES = ("gs://", "s3://", "az://")


def is_remote(location: str | os.PathLike) -> bool:
  return os.fspath(location).startswith(REMOTE_SCHEMES)


def path(location: str | os.PathLike) -> epath.Path:
  """`location` as an epath.Path: a local path made absolute (so that it names the same file if
  the working directory changes), a remote one as given."""
  location = os.fspath(location)
  return epath.Path(location if is_remote(location) else os.path.abspath(location))


def read_text(location: str | os.PathLike) -> str:
  return path(location).read_text()


def sha256(location: str | os.PathLike) -> str:
  """The file's SHA-256, read in chunks (files of gigabytes)."""
  digest = hashlib.sha256()
  with path(location).open("rb") as file:
    while chunk := file.read(1 << 20):
      digest.update(chunk)
  return digest.hexdigest()


# A tokenizer's model file comes with others' checkpoints and is read whole: SigLIP's SentencePiece
# model is 0.8 MB, Gemma's 4 MB; far larger is refused rather than read.
TOKENIZER_MODEL_MAX_BYTES = 64 << 20


# The options a tokenizer reads beside its model file, as Hugging Face publishes them (Gemma's:
# padding_side); a converted checkpoint carries the file with the model file.
TOKENIZER_OPTIONS = "tokenizer_config.json"


def read_tokenizer_model(location: str | os.PathLike, key: str) -> bytes:
  """A tokenizer model file's bytes, refused (naming `key`) above TOKENIZER_MODEL_MAX_BYTES."""
  size = path(location).stat().length
  if size > TOKENIZER_MODEL_MAX_BYTES:
    raise ValueError(f"{key}={str(location)!r} is {size:,} bytes; allowed: a tokenizer model of at "
                     f"most {TOKENIZER_MODEL_MAX_BYTES:,} bytes.")
  return path(location).read_bytes()


def write_bytes(location: str | os.PathLike, data: bytes) -> None:
  """Writes the whole file at once: a reader sees the old content or the new, never half of it.

  A bucket publishes an object only once its upload is complete; a local file is written beside
  its place under a name of its own (two writers never share it), flushed to the disk, and then
  renamed into place.
  """
  target = path(location)
  target.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(location):
    target.write_bytes(data)
    return
  partial = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
  with open(partial, "wb") as file:
    file.write(data)
    file.flush()
    os.fsync(file.fileno())
  partial.replace(target)


def write_text(location: str | os.PathLike, text: str) -> None:
  """`write_bytes` of UTF-8 text."""
  write_bytes(location, text.encode())


def append_text(location: str | os.PathLike, text: str) -> None:
  """Appends to a local file; rewrites a remote one, since a bucket's objects cannot grow."""
  target = path(location)
  if not is_remote(location):
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a") as file:
      file.write(text)
    return
  write_text(location, (target.read_text() if target.exists() else "") + text)


def save_figure(figure, location: str | os.PathLike, dpi: int) -> None:
  """A matplotlib Figure as a PNG at `location`."""
  with path(location).open("wb") as file:
    figure.savefig(file, format="png", dpi=dpi)


def copy_tree(source: str, destination: str | os.PathLike) -> None:
  """Copies every file under the local folder `source` to `destination`, overwriting."""
  for directory, _, names in os.walk(source):
    relative = os.path.relpath(directory, source)
    target = path(destination) / relative if relative != "." else path(destination)
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
      (target / name).write_bytes(epath.Path(directory, name).read_bytes())
