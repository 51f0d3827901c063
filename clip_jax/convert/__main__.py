"""Converts CLIP weights: `python -m clip_jax.convert --src=<file or dir> --dst=<dir>`.

Import (no --to): an OpenAI TorchScript archive or state dict, an open_clip state dict (.pt,
.bin, .safetensors; CLIP or SigLIP), a Hugging Face CLIPModel or SiglipModel directory, or a hub
repository (hf-hub:<repo>, in open_clip's or transformers' layout) -> a clip_jax checkpoint
directory, carrying the tokenizer the weights were trained with.
Export (--to=open_clip or --to=hf): a clip_jax checkpoint directory -> safetensors and a config
that open_clip (`create_model("local-dir:<dst>")`) or transformers (`CLIPModel` /
`SiglipModel.from_pretrained`) load unchanged.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

from clip_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from clip_jax import convert
from clip_jax import pretrained
from clip_jax.models import configs
from clip_jax import image_preparation

_SRC = flags.DEFINE_string("src", None, "Weights file, Hugging Face directory, hf-hub:<repo> "
                           "(downloaded through huggingface_hub), or (with --to) a clip_jax "
                           "checkpoint directory.")
_DST = flags.DEFINE_string("dst", None, "Output directory.")
_MODEL = flags.DEFINE_enum("model", None, configs.list_models(),
                           "Architecture; by default read from the weights' shapes.")
_ACTIVATION = flags.DEFINE_enum("activation", None, ["quick_gelu", "gelu"],
                                "Activation the weights were trained with, where the default "
                                "guess is wrong (e.g. gelu for LAION's ViT-B-32).")
_MEAN = flags.DEFINE_list("mean", None, "Per-channel (R, G, B) mean the weights were trained with, "
                          "where the source does not publish it (open_clip_config.json, "
                          "preprocessor_config.json); default OpenAI's. E.g. 0.5,0.5,0.5.")
_STD = flags.DEFINE_list("std", None, "Per-channel standard deviation, as --mean.")
_RESIZE_MODE = flags.DEFINE_enum("resize_mode", None, list(image_preparation.RESIZE_MODES),
                                 "How evaluation resizes images, as --mean (default shortest).")
_INTERPOLATION = flags.DEFINE_enum("interpolation", None, list(image_preparation.INTERPOLATIONS),
                                   "The resize filter, as --mean (default bicubic).")
_TRUST_CODE = flags.DEFINE_bool(
    "trust_code", False, "Load a TorchScript archive that is not one of OpenAI's releases. Such "
    "a file is a program: PyTorch runs the code inside it as it loads, with your permissions. "
    "Only for files from someone you trust; otherwise use the weights as .safetensors.")
_TO = flags.DEFINE_enum("to", None, list(convert.EXPORT_FORMATS),
                        "Export a clip_jax checkpoint for this library instead of importing.")


def main(argv):
  del argv
  if _TO.value:
    config, variables = pretrained.read(_SRC.value)
    _, tokenizer_file = pretrained.read_tokenizer(_SRC.value)
    for path in convert.export_weights(config, variables, _DST.value, _TO.value, tokenizer_file):
      print(f"Wrote {path}")
    return
  channels = lambda flag: flag.value and tuple(float(value) for value in flag.value)  # noqa: E731
  try:
    imported = convert.import_weights(_SRC.value, _MODEL.value, _ACTIVATION.value, dict(
        mean=channels(_MEAN), std=channels(_STD), resize_mode=_RESIZE_MODE.value,
        interpolation=_INTERPOLATION.value), trust_code=_TRUST_CODE.value)
  except (ValueError, FileNotFoundError, ImportError, NotImplementedError) as error:  # for the user
    cli.refuse(error)
  pretrained.save(_DST.value, imported.config, imported.variables, imported.source,
                  imported.tokenizer, imported.tokenizer_file)
  source = imported.source
  read_from = f"hf-hub:{source['hub']} ({source['path']})" if "hub" in source else source["path"]
  print(f"Read {read_from}, {source['format']}; architecture from "
        f"{source['architecture']}, activation {source['activation']}, tokenizer "
        f"{source['tokenizer']}.")
  preprocessing = imported.config.preprocessing
  print("Preprocessing: " + ", ".join(
      f"{key} {getattr(preprocessing, key)} ({where})"
      for key, where in source["preprocessing"].items()) + ".")
  print(f"Wrote {os.path.abspath(_DST.value)}: load it with clip_jax.load({_DST.value!r}).")


if __name__ == "__main__":
  flags.mark_flags_as_required(["src", "dst"])
  app.run(main)
