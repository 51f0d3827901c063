"""`python gcs_emulator.py PORT BUCKET`: a Google Cloud Storage emulator on localhost for the tests.

It is gcp-storage-emulator with the two parts of GCS that it lacks and that TensorStore (Orbax's
checkpoints) relies on, added here: an object's generation in the `x-goog-generation` header of
every read, and the `ifGenerationMatch` / `ifGenerationNotMatch` preconditions, on which
TensorStore's OCDBT format builds its atomic updates.
"""

import sys
import time
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

NO_OBJECT = "0"  # GCS's generation of an object that does not exist


def _generation(request, storage, object_id: str) -> str:
  try:
    return str(storage.get_file_obj(request.params["bucket_name"], object_id)["generation"])
  except NotFound:
    return NO_OBJECT


def with_generations(handler):
  """`handler`, honouring the preconditions and naming the generation it read or wrote."""

  def handle(request, response, storage, *args, **kwargs):
    object_id = request.params.get("object_id") or (request.query.get("name") or [None])[0]
    if object_id is None:
      return handler(request, response, storage, *args, **kwargs)
    current = _generation(request, storage, object_id)
    must_match = request.query.get("ifGenerationMatch")
    if must_match and must_match[0] != current:
      response.status = HTTPStatus.PRECONDITION_FAILED
      return None
    must_differ = request.query.get("ifGenerationNotMatch")
    if must_differ and must_differ[0] == current:
      response.status = HTTPStatus.NOT_MODIFIED
      return None
    result = handler(request, response, storage, *args, **kwargs)
    if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
      response["x-goog-generation"] = _generation(request, storage, object_id)
    return result

  return handle


def main(port: int, bucket: str) -> None:
  wrapped = {handler: with_generations(handler)
             for handler in (objects.get, objects.download, objects.insert, objects.delete)}
  for _, methods in server.HANDLERS:
    for method, handler in methods.items():
      methods[method] = wrapped.get(handler, handler)
  objects.insert = wrapped[objects.insert]  # The router's fallback for uploads.
  emulator = server.create_server("localhost", port, in_memory=True, default_bucket=bucket)
  emulator.start()
  print("ready", flush=True)
  while True:
    time.sleep(3600)


if __name__ == "__main__":
  main(int(sys.argv[1]), sys.argv[2])
