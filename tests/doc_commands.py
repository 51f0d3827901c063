"""Runs the commands and snippets that README.md and docs/ show, so that a doc the code rejects
fails CI.

A page's ```sh blocks hold its commands (`python -m ...`, `make ...`), one per logical line;
its ```python blocks are complete programs. Each page runs in a workspace of its own: a folder
with the repository's configs/ and benchmarks/, and stand-ins for what a user would bring (a
checkpoint to convert, an image, a CSV table). The commands run as written, made short where
needed by flags appended after their own (a later flag wins): a few training steps at a small
batch, a tiny model in place of ViT-B/32, a plan at a small batch, a few samples per generated
shard. Absolute /tmp/ paths move into the workspace, so that pages can run at the same time.
Python commands start in processes forked from one that has imported TensorFlow and JAX already
(tests/command_server.py), on one CPU device, as on a user's machine without accelerators.
"""

from __future__ import annotations

import atexit
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

import command_server
import hub_cache
from xla_flags import xla_flags

REPOSITORY = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
# Every page that shows commands or snippets, each run by one test (tests/test_docs_*.py).
PAGES = ("README.md", "docs/training.md", "docs/several_hosts.md", "docs/data.md",
         "docs/models.md", "docs/evaluation.md", "docs/pretrained.md", "docs/scaling.md",
         "docs/performance.md", "docs/accelerators.md", "docs/design.md", "docs/weights.md")
# `make test` runs this very suite (and is what CI runs); every other command runs here.
NOT_RUN = ("make test",)
TIMEOUT_SECONDS = 600

# A training run of a few steps, on whatever the command trains.
SHORT_TRAINING = ("--config.total_steps=2", "--config.log_every_steps=1",
                  "--config.optim.warmup_steps=1", "--config.checkpoint.every_steps=2",
                  "--config.global_batch_size=16")
# The quickstart's evaluators on few images.
DEMO_EVALUATIONS = ("--config.evals.zero_shot.num_images=32",
                    "--config.evals.benchmark.num_images=32")
# The stand-in checkpoints' architecture, for commands that train or convert ViT-B/32.
TINY_MODEL = ("--config.model.name=tiny-vit", "--config.model.overrides.text.vocab_size=49408")
# A plan's batch: libtpu's compile time grows with it (a tiny model for v5p-128: 64 s at the
# configs' 32,768, 18 s at 1,024).
PLAN_BATCH = "--config.global_batch_size=1024"
SHARD_SAMPLES = 8
# Programs whose documented commands train for many steps (the scaling sweep's smallest run: 125),
# compiled with LLVM's optimisations (see xla_flags).
MANY_STEPS = ("clip_jax.sweep",)
# Where the stand-ins of hub repositories go, which the commands use offline: one cache for all
# the pages a test process runs, so that their commands share one environment (one server).
HUB_CACHE = os.path.join(tempfile.gettempdir(), f"clip_jax_tests_hub_cache.{os.getpid()}")
atexit.register(shutil.rmtree, HUB_CACHE, ignore_errors=True)


def blocks(page: str, language: str) -> list[str]:
  """The text of every ```<language> block of a page."""
  with open(os.path.join(REPOSITORY, page)) as file:
    text = file.read()
  return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def documented_message(page: str, message: str) -> str:
  """`message` as the page shows it: its ```text blocks hold messages with <placeholders>, after
  "Error: " or a log line's "] "; the message must match exactly one of them."""
  shown = [re.split(r"^Error: |^\S+ \S+ \S+ \S+\] ", line, maxsplit=1)[-1]
           for block in blocks(page, "text") for line in block.splitlines()]
  patterns = ["^" + re.sub(r"<[^>]+>", ".+", re.escape(line)) + "$" for line in shown]
  assert sum(bool(re.match(pattern, message)) for pattern in patterns) == 1, (message, page)
  return message


def commands(page: str) -> list[str]:
  """The page's commands in order, continuation lines joined, comments left out."""
  found = []
  for block in blocks(page, "sh"):
    logical = re.sub(r"\\\n\s*", " ", block)
    found.extend(line.strip() for line in logical.splitlines()
                 if line.strip() and not line.lstrip().startswith("#"))
  return found


def _value(arguments: list[str], flag: str) -> str | None:
  prefix = f"--{flag}="
  return next((argument[len(prefix):] for argument in arguments
               if argument.startswith(prefix)), None)


def shortened(command: str, workspace: str) -> list[str]:
  """The argv that runs `command` in `workspace`, made short (see the module docstring)."""
  command = command.replace("/tmp/", f"{workspace}/tmp/")
  arguments = shlex.split(command)
  if arguments[0] == "make":
    return _shortened_make(arguments, workspace)
  if arguments[:2] != ["python", "-m"]:
    raise ValueError(f"A documented command must start with `python -m` or `make`: {command!r}")
  program = arguments[2]
  arguments = [sys.executable, *arguments[1:]]
  if program == "clip_jax.train":
    arguments += SHORT_TRAINING
    config = _value(arguments, "config") or ""
    if "synthetic_demo" in config:
      arguments += DEMO_EVALUATIONS
    elif ":tiny" not in config:
      arguments += TINY_MODEL
    if _value(arguments, "config.flip.unmasked_steps"):
      arguments.append("--config.flip.unmasked_steps=1")
  elif program == "clip_jax.plan":
    if ":tiny" not in (_value(arguments, "config") or ""):
      arguments += TINY_MODEL
    arguments.append(PLAN_BATCH)
  elif program == "input_pipeline.write_shards" and _value(arguments, "synthetic"):
    # As many shards as documented, of a few samples each.
    shards = int(_value(arguments, "synthetic")) // int(_value(arguments, "samples_per_shard"))
    arguments += [f"--synthetic={shards * SHARD_SAMPLES}", f"--samples_per_shard={SHARD_SAMPLES}"]
  elif program == "clip_jax.convert" and not _value(arguments, "to"):
    # The stand-in weights are a tiny model: its architecture comes from its shapes.
    arguments = [argument for argument in arguments if not argument.startswith("--model=")]
  return arguments


def _shortened_make(arguments: list[str], workspace: str) -> list[str]:
  """`make demo` into the workspace, with this interpreter's environment (already installed:
  -o keeps make from installing again) and a short run."""
  venv = sys.prefix
  demo_flags = " ".join([*SHORT_TRAINING, *DEMO_EVALUATIONS])
  return [*arguments, "-C", REPOSITORY, "-o", f"{venv}/.installed-runtime",
          "-o", f"{venv}/.installed-test", f"VENV={venv}",
          f"DEMO_WORKDIR={workspace}/workdirs/demo", f"DEMO_FLAGS={demo_flags}"]


def environment(workspace: str, argv: tuple[str, ...] = ()) -> dict[str, str]:
  """The environment of the command `argv`: one CPU device, as on a user's machine without
  accelerators (sharding is the other tests' business), and the stand-in hub cache, offline."""
  optimized = any(program in argv for program in MANY_STEPS)
  return {**os.environ, "PYTHONPATH": workspace, "XLA_FLAGS": xla_flags(1, optimized),
          **hub_cache.offline_environment(HUB_CACHE)}


def run(argv: list[str], workspace: str, label: str) -> str:
  """Runs one command in the workspace; fails the test with its output if it fails. Python
  commands run through the command server, the others (make) as subprocesses."""
  env = environment(workspace, tuple(argv))
  if argv[0] == sys.executable:
    completed = command_server.run_python(argv[1:], cwd=workspace, env=env,
                                          timeout=TIMEOUT_SECONDS)
  else:
    completed = subprocess.run(argv, cwd=workspace, capture_output=True, text=True,
                               timeout=TIMEOUT_SECONDS, check=False, env=env)
  output = completed.stdout + completed.stderr
  assert completed.returncode == 0, f"{label}: {shlex.join(argv)}\n{output[-4000:]}"
  return output


def run_page(page: str, workspace: str) -> dict[str, str]:
  """Every command, then every Python snippet, of a page, in order; their outputs by label."""
  outputs = {}
  for index, command in enumerate(commands(page)):
    if command in NOT_RUN:
      continue
    label = f"{page}, command {index + 1}"
    outputs[command] = run(shortened(command, workspace), workspace, label)
  for index, snippet in enumerate(blocks(page, "python")):
    label = f"{page}, Python snippet {index + 1}"
    outputs[f"python snippet {index + 1}"] = run([sys.executable, "-c", snippet], workspace,
                                                 label)
  return outputs


def create_workspace(path: str) -> str:
  """A folder that looks like the repository's root to the commands. Starts the commands'
  server, so that it imports while the test prepares."""
  command_server.server(environment(path))
  os.makedirs(os.path.join(path, "tmp"), exist_ok=True)
  for name in ("configs", "benchmarks"):
    if not os.path.exists(os.path.join(path, name)):
      os.symlink(os.path.join(REPOSITORY, name), os.path.join(path, name))
  return path


def init_variables(architecture):
  """Random variables of `architecture`, as numpy arrays."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from clip_jax.models import clip as clip_model  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray, clip_model.init_variables(architecture, jax.random.PRNGKey(0)))


def tiny_weights():
  """(architecture, variables) of the stand-in checkpoints: a tiny ViT with CLIP's vocabulary."""
  from clip_jax.models import configs  # pylint: disable=g-import-not-at-top
  architecture = configs.get_model_config("tiny-vit", text=dict(vocab_size=49_408))
  return architecture, init_variables(architecture)


def _noise_png(seed: int) -> bytes:
  import io  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out = io.BytesIO()
  pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(out, format="PNG")
  return out.getvalue()


def add_stand_ins(workspace: str, *names: str) -> None:
  """What the docs tell users to bring, made up: "ViT-B-32.pt" (OpenAI's state dict layout),
  "open_clip_model.safetensors", "clip-vit-base-patch32" (a transformers directory),
  "ckpt/vit-b-32" (converted), "cat.jpg", "photos/" (a folder of photographs),
  "data/train.tsv" (a table of images and captions), "evalsets/" (the benchmark's data: two tasks
  in DataComp's layout, CIFAR-10 and COCO retrieval), "hf-hub:<owner>/<name>" (a hub repository in
  open_clip's layout, in the stand-in hub cache; "hf-hub:google/siglip..." a SiglipModel with its
  SentencePiece model)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from clip_jax import convert  # pylint: disable=g-import-not-at-top
  from clip_jax import pretrained  # pylint: disable=g-import-not-at-top
  from clip_jax.convert import tensor_files  # pylint: disable=g-import-not-at-top
  at = lambda *parts: os.path.join(workspace, *parts)  # noqa: E731
  architecture, variables = tiny_weights()
  for name in names:
    if name == "ckpt/vit-b-32":
      pretrained.save(at(name), architecture, variables)
    elif name == "open_clip_model.safetensors":
      convert.export_weights(architecture, variables, at("open_clip"), "open_clip")
      os.replace(at("open_clip", convert.OPEN_CLIP_WEIGHTS), at(name))
    elif name == "ViT-B-32.pt":
      import torch  # pylint: disable=g-import-not-at-top
      convert.export_weights(architecture, variables, at("openai"), "open_clip")
      tensors = tensor_files.read(at("openai", convert.OPEN_CLIP_WEIGHTS))
      torch.save({key: torch.from_numpy(np.array(value)) for key, value in tensors.items()},
                 at(name))
    elif name.startswith("hf-hub:google/siglip"):
      # transformers' SiglipModel with its config and SigLIP's SentencePiece model.
      import references  # pylint: disable=g-import-not-at-top
      from clip_jax.models import configs  # pylint: disable=g-import-not-at-top
      folder = at("hf_" + name.replace("/", "_"))
      siglip = configs.get_model_config("tiny-siglip", text=dict(vocab_size=300))
      os.makedirs(folder, exist_ok=True)
      convert.export_weights(siglip, init_variables(siglip), folder, "hf",
                             references.siglip_sentencepiece(pathlib.Path(folder)))
      hub_cache.add_repository(HUB_CACHE, name.removeprefix("hf-hub:"), {
          file: pathlib.Path(folder, file) for file in os.listdir(folder)})
    elif name.startswith("hf-hub:"):
      # open_clip's layout: its weights and its config (LAION's: GELU, OpenAI's statistics).
      folder = at("open_clip_" + name.replace("/", "_"))
      convert.export_weights(architecture, variables, folder, "open_clip")
      hub_cache.add_repository(HUB_CACHE, name.removeprefix("hf-hub:"), {
          file: pathlib.Path(folder, file) for file in os.listdir(folder)})
    elif name == "clip-vit-base-patch32":
      convert.export_weights(architecture, variables, at(name), "hf")
    elif name == "cat.jpg":
      from skimage import data as skimage_data  # pylint: disable=g-import-not-at-top
      Image.fromarray(skimage_data.chelsea()).save(at(name))
    elif name == "photos/":
      from skimage import data as skimage_data  # pylint: disable=g-import-not-at-top
      os.makedirs(at(name, "2024"), exist_ok=True)
      for photo in ("astronaut", "coffee", "rocket", "chelsea", "hubble_deep_field"):
        folder = "2024" if photo in ("chelsea", "rocket") else ""
        Image.fromarray(getattr(skimage_data, photo)()).save(at(name, folder, f"{photo}.jpg"))
    elif name == "data/train.tsv":
      os.makedirs(at("data", "images"), exist_ok=True)
      rows = ["filepath\ttitle"]
      for index in range(24):
        pixels = np.random.default_rng(index).integers(0, 256, (48, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(at("data", "images", f"{index}.jpg"))
        rows.append(f"images/{index}.jpg\ta photo of noise number {index}")
      with open(at(name), "w") as file:
        file.write("\n".join(rows) + "\n")
    elif name == "evalsets/":
      from clip_jax.evaluation import benchmark_data  # pylint: disable=g-import-not-at-top
      benchmark_data.write_task(at(name, "wds_cifar10_test"), [
          {"png": _noise_png(index), "cls": str(index % 10).encode()} for index in range(12)],
          classnames=["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                      "ship", "truck"], templates=["a photo of a {c}.", "a blurry photo of a {c}."])
      benchmark_data.write_task(at(name, "wds_mscoco_captions"), [
          {"png": _noise_png(100 + index), "txt": f"noise {index}\nnumber {index}".encode()}
          for index in range(6)], dataset_type="retrieval")
    else:
      raise ValueError(f"No stand-in for {name!r}.")
