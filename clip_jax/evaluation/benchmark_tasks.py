"""The scaling papers' benchmark as data: DataComp's 38 tasks (Gadre et al. 2023), which open_clip's
results table (`docs/openclip_results.csv`, Cherti et al. 2023's models and later ones) and the
DataComp leaderboard report, each with its metric as those tables compute it and where its data
is found; and the CLIP paper's 27 linear-probe datasets.

Each task's key, column title, main metric and group columns are DataComp's (`tasklist.yml` and
`eval_utils/` of github.com/mlfoundations/datacomp); the class names and templates are
CLIP_benchmark's (assets/clip_benchmark_prompts.json), which DataComp's WebDataset copies also
carry beside their shards. Named suites pick subsets: the whole list, ImageNet and its
distribution shifts, DataComp's VTAB tasks, retrieval, the WILDS and fairness sets, a quick one to
run during training, the synthetic world's tasks, and the linear probes.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json

CLASSIFICATION, RETRIEVAL, ASSOCIATION = "classification", "retrieval", "association"
LINEAR_PROBE = "linear_probe"


@dataclasses.dataclass(frozen=True)
class GroupMetric:
  """A WILDS-style worst-group metric: top-k accuracy per value of one column of each sample's
  metadata (the `npy` member of DataComp's shards), the lowest over the groups present."""
  name: str  # as DataComp reports it, e.g. "acc_worst_region"
  column: int  # in the metadata vector, DataComp's `_metadata_fields` order
  k: int = 1


@dataclasses.dataclass(frozen=True)
class TfdsData:
  """Where a task's test set is in TFDS, when it is there with the same examples and labels."""
  name: str
  split: str
  # The ImageNet classes a 1,000-class label space is narrowed to (a key of the assets'
  # "imagenet_subsets"): ImageNet-A and -R are scored among their 200 classes.
  imagenet_subset: str = ""
  caption_feature: str = "captions/text"
  # A linear probe's: fitted on train_split, its strength chosen on validation_split.
  train_split: str = ""
  validation_split: str = ""


@dataclasses.dataclass(frozen=True)
class Task:
  """One task: what it is scored by, and where its data may be."""
  key: str  # DataComp's task key, e.g. "vtab/cifar100"
  title: str  # its column in open_clip's results table
  kind: str = CLASSIFICATION
  main_metric: str = "acc1"
  num_classes: int = 0  # DataComp's count, for reference
  group_metrics: tuple[GroupMetric, ...] = ()
  macro_f1: bool = False  # also F1-macro_all over the labels present (iWildCam's main metric)
  tfds: TfdsData | None = None
  # The Hugging Face dataset nlphuji/<name> that DataComp's scripts read it from (retrieval and
  # WinoGAViL), found in their cache under the data root.
  hugging_face: str = ""

  @property
  def short_name(self) -> str:
    return self.key.split("/", 1)[-1]

  @property
  def directories(self) -> tuple[str, ...]:
    """Folder names under --data_dir that may hold the task in WebDataset form: DataComp's
    download script's (`wds_<key with / as ->_test`, the fairness/ prefix dropped) and
    CLIP_benchmark's (`wds_<key with / as ->`)."""
    name = self.key.removeprefix("fairness/").replace("/", "-")
    return (f"wds_{name}_test", f"wds_{name}", *_EXTRA_DIRECTORIES.get(self.key, ()))


# CLIP_benchmark's copy of COCO's 5k test images, DataComp's MSCOCO set, under its own name.
# (Its wds_flickr30k holds Flickr30k's 1k test images, where DataComp scores all 31,014.)
_EXTRA_DIRECTORIES = {"retrieval/mscoco_2014_5k_test_image_text_retrieval":
                      ("wds_mscoco_captions",)}


def _tfds(name: str, split: str = "test", **options) -> TfdsData:
  return TfdsData(name, split, **options)


def _probe(key: str, title: str, tfds_name: str = "", splits: str = "held_out") -> Task:
  """A linear-probe task, its TFDS splits: "held_out" (the last 10% of train for validation, the
  test split), "given" (train, validation, test), "vtab" (train's first 60%, next 20%, last 20%:
  VTAB's, for sets with one split), "food101" and "imagenet" (10% and 1% of train held out, the
  validation split as test)."""
  train, validation, test = {
      "held_out": ("train[:90%]", "train[90%:]", "test"),
      "given": ("train", "validation", "test"),
      "vtab": ("train[:60%]", "train[60%:80%]", "train[80%:]"),
      "food101": ("train[:90%]", "train[90%:]", "validation"),
      "imagenet": ("train[:99%]", "train[99%:]", "validation")}[splits]
  data = (TfdsData(tfds_name, test, train_split=train, validation_split=validation)
          if tfds_name else None)
  return Task(f"linear_probe/{key}", title, kind=LINEAR_PROBE, main_metric="top1", tfds=data)


# In open_clip's results table's column order.
TASKS = (
    Task("imagenet1k", "ImageNet 1k", num_classes=1000, tfds=_tfds("imagenet2012", "validation")),
    Task("vtab/caltech101", "Caltech-101", main_metric="mean_per_class_recall", num_classes=102),
    Task("cifar10", "CIFAR-10", num_classes=10, tfds=_tfds("cifar10")),
    Task("vtab/cifar100", "CIFAR-100", num_classes=100, tfds=_tfds("cifar100")),
    Task("vtab/clevr_count_all", "CLEVR Counts", num_classes=8),
    Task("vtab/clevr_closest_object_distance", "CLEVR Distance", num_classes=6),
    Task("country211", "Country211", num_classes=211),
    Task("vtab/dtd", "Describable Textures", num_classes=47, tfds=_tfds("dtd")),
    # VTAB's test split of EuroSAT: the last 20% of TFDS's only split.
    Task("vtab/eurosat", "EuroSAT", num_classes=10, tfds=_tfds("eurosat/rgb", "train[21600:]")),
    Task("fgvc_aircraft", "FGVC Aircraft", main_metric="mean_per_class_recall", num_classes=100),
    Task("food101", "Food-101", num_classes=101, tfds=_tfds("food101", "validation")),
    Task("gtsrb", "GTSRB", num_classes=43),
    Task("imagenet_sketch", "ImageNet Sketch", num_classes=1000, tfds=_tfds("imagenet_sketch")),
    Task("imagenetv2", "ImageNet v2", num_classes=1000, tfds=_tfds("imagenet_v2")),
    Task("imagenet-a", "ImageNet-A", num_classes=200,
         tfds=_tfds("imagenet_a", imagenet_subset="imagenet-a")),
    Task("imagenet-o", "ImageNet-O", num_classes=200),
    Task("imagenet-r", "ImageNet-R", num_classes=200,
         tfds=_tfds("imagenet_r", imagenet_subset="imagenet-r")),
    Task("vtab/kitti_closest_vehicle_distance", "KITTI Vehicle Distance", num_classes=4),
    Task("mnist", "MNIST", num_classes=10, tfds=_tfds("mnist")),
    Task("objectnet", "ObjectNet", num_classes=113),
    Task("vtab/flowers", "Oxford Flowers-102", main_metric="mean_per_class_recall",
         num_classes=102, tfds=_tfds("oxford_flowers102")),
    Task("vtab/pets", "Oxford-IIIT Pet", main_metric="mean_per_class_recall", num_classes=37,
         tfds=_tfds("oxford_iiit_pet")),
    Task("voc2007", "Pascal VOC 2007", num_classes=20),
    Task("vtab/pcam", "PatchCamelyon", num_classes=2, tfds=_tfds("patch_camelyon")),
    Task("renderedsst2", "Rendered SST2", num_classes=2),
    Task("vtab/resisc45", "RESISC45", num_classes=45),
    Task("cars", "Stanford Cars", num_classes=196, tfds=_tfds("cars196")),
    Task("stl10", "STL-10", num_classes=10, tfds=_tfds("stl10")),
    Task("sun397", "SUN397", num_classes=397),
    Task("vtab/svhn", "SVHN", num_classes=10, tfds=_tfds("svhn_cropped")),
    Task("retrieval/flickr30k", "Flickr", kind=RETRIEVAL, main_metric="mean_recall@1",
         hugging_face="flickr30k"),
    Task("retrieval/mscoco_2014_5k_test_image_text_retrieval", "MSCOCO", kind=RETRIEVAL,
         main_metric="mean_recall@1", tfds=_tfds("coco_captions"),
         hugging_face="mscoco_2014_5k_test_image_text_retrieval"),
    # WinoGAViL: per cue, choose as many of its 5 to 12 candidate images as it has associations;
    # the Jaccard index of the choice, averaged over the cues with 10 to 12 candidates.
    Task("misc/winogavil", "WinoGAViL", kind=ASSOCIATION, main_metric="jaccard_score_10-12",
         hugging_face="winogavil"),
    # iWildCam: metadata (location, sequence, year, ..., y); scored by macro F1 over its labels.
    Task("wilds/iwildcam", "iWildCam", main_metric="F1-macro_all", num_classes=182,
         macro_f1=True),
    # Camelyon17: metadata (hospital, slide, y); the worst slide is reported beside the mean.
    Task("wilds/camelyon17", "Camelyon17", num_classes=2,
         group_metrics=(GroupMetric("acc_wg", column=1),)),
    # FMoW: metadata (region, year, y); scored by the worst region.
    Task("wilds/fmow", "FMoW", main_metric="acc_worst_region", num_classes=62,
         group_metrics=(GroupMetric("acc_worst_region", column=0),
                        GroupMetric("acc_worst_year", column=1))),
    # Dollar Street: metadata (income_ds, income_meta, region); top-5 of the poorest-scored
    # income group.
    Task("fairness/dollar_street", "Dollar Street", main_metric="acc_top5_wg", num_classes=58,
         group_metrics=(GroupMetric("acc_top5_wg", column=0, k=5),)),
    # GeoDE: metadata (region, country); the worst region.
    Task("fairness/geode", "GeoDE", main_metric="acc_wg", num_classes=40,
         group_metrics=(GroupMetric("acc_wg", column=0),)),
)
# The built-in synthetic world's new images as tasks of the benchmark's kinds, their data written
# from the training settings (`synthetic_tasks`): the suite's machinery at work wherever the
# quickstart runs. Metadata column 0: whether the image's colour-shape pair is held out.
SYNTHETIC_TASKS = (
    Task("synthetic/shape", "Synthetic shape", group_metrics=(GroupMetric("acc_wg", column=0),)),
    Task("synthetic/colour", "Synthetic colour", main_metric="mean_per_class_recall"),
    Task("synthetic/captions", "Synthetic captions", kind=RETRIEVAL, main_metric="mean_recall@1"),
)
# The CLIP paper's 27 linear-probe datasets (Radford et al. 2021, Table 10), in its order: a
# logistic regression on frozen image features (`linear_probe`), scored by top-1 accuracy (the
# paper reports mean per-class recall for Pets, Caltech-101, Flowers and Aircraft, 11-point mAP
# for VOC, ROC AUC for Hateful Memes). Read from TFDS, where 15 of them are.
LINEAR_PROBE_TASKS = (
    _probe("food101", "Food-101", "food101", "food101"),
    _probe("cifar10", "CIFAR-10", "cifar10"),
    _probe("cifar100", "CIFAR-100", "cifar100"),
    _probe("birdsnap", "Birdsnap"),
    _probe("sun397", "SUN397", "sun397/tfds", "given"),
    _probe("cars", "Stanford Cars", "cars196"),
    _probe("fgvc_aircraft", "FGVC Aircraft"),
    _probe("voc2007", "Pascal VOC 2007"),
    _probe("dtd", "Describable Textures", "dtd", "given"),
    _probe("pets", "Oxford-IIIT Pet", "oxford_iiit_pet"),
    _probe("caltech101", "Caltech-101", "caltech101"),
    _probe("flowers", "Oxford Flowers-102", "oxford_flowers102", "given"),
    _probe("mnist", "MNIST", "mnist"),
    _probe("fer2013", "FER2013"),
    _probe("stl10", "STL-10", "stl10"),
    _probe("eurosat", "EuroSAT", "eurosat/rgb", "vtab"),
    _probe("resisc45", "RESISC45", "resisc45", "vtab"),
    _probe("gtsrb", "GTSRB"),
    _probe("kitti", "KITTI"),
    _probe("country211", "Country211"),
    _probe("pcam", "PatchCamelyon", "patch_camelyon", "given"),
    _probe("ucf101", "UCF101"),
    _probe("kinetics700", "Kinetics700"),
    _probe("clevr", "CLEVR Counts"),
    _probe("hateful_memes", "Hateful Memes"),
    _probe("renderedsst2", "Rendered SST2"),
    _probe("imagenet", "ImageNet", "imagenet2012", "imagenet"),
)
TASKS_BY_KEY = {task.key: task for task in (*TASKS, *SYNTHETIC_TASKS, *LINEAR_PROBE_TASKS)}

_IMAGENET_SHIFTS = ("imagenet1k", "imagenetv2", "imagenet_sketch", "imagenet-a", "imagenet-r",
                    "objectnet")
# DataComp's tasks tagged vtab_natural, vtab_specialized or vtab_structured.
_VTAB = tuple(task.key for task in TASKS if task.key.startswith("vtab/"))
SUITES = {
    "datacomp": tuple(task.key for task in TASKS),
    "imagenet_shifts": _IMAGENET_SHIFTS,
    "vtab": _VTAB,
    "retrieval": tuple(task.key for task in TASKS if task.kind == RETRIEVAL),
    "wilds": tuple(task.key for task in TASKS if task.key.startswith("wilds/")),
    "fairness": tuple(task.key for task in TASKS if task.key.startswith("fairness/")),
    # Small enough to run during training: ImageNet, two CIFARs and COCO retrieval.
    "quick": ("imagenet1k", "cifar10", "vtab/cifar100",
              "retrieval/mscoco_2014_5k_test_image_text_retrieval"),
    "synthetic": tuple(task.key for task in SYNTHETIC_TASKS),
    "clip_linear_probe": tuple(task.key for task in LINEAR_PROBE_TASKS),
}


def suite_tasks(name: str) -> tuple[Task, ...]:
  """The tasks of a suite name or of comma-separated task keys, in the table's order."""
  keys = SUITES.get(name) or tuple(key.strip() for key in name.split(",") if key.strip())
  unknown = [key for key in keys if key not in TASKS_BY_KEY]
  if unknown or not keys:
    raise ValueError(f"suite {name!r}: {', '.join(unknown) or 'no tasks'} unknown; allowed: "
                     f"{', '.join(SUITES)}, or task keys from {', '.join(TASKS_BY_KEY)}.")
  return tuple(task for task in TASKS_BY_KEY.values() if task.key in keys)


@functools.cache
def _prompts() -> dict:
  path = importlib.resources.files("clip_jax.evaluation") / "assets" / "clip_benchmark_prompts.json"
  return json.loads(path.read_text(encoding="utf-8"))


def _first_found(table: dict, keys) -> list[str] | None:
  return next((table[key] for key in keys if key in table), None)


def classnames(task: Task) -> list[str] | None:
  """CLIP_benchmark's class names for the task (looked up by its key, then its name without the
  vtab/ prefix, as CLIP_benchmark does), ImageNet-A/-R/-O's as its 200 ImageNet classes; None
  where the benchmark takes them from the dataset itself (DataComp's shards carry them)."""
  subset = _prompts()["imagenet_subsets"].get(task.key)
  if subset:
    wanted = set(subset)
    return [name for name, wnid in zip(_prompts()["classnames"]["imagenet1k"],
                                       _prompts()["imagenet_wnids"]) if wnid in wanted]
  if task.key in ("imagenetv2", "imagenet_sketch"):
    return list(_prompts()["classnames"]["imagenet1k"])
  return _first_found(_prompts()["classnames"], (task.key, task.short_name))


def templates(task: Task) -> list[str]:
  """CLIP_benchmark's templates for the task, ImageNet's 80 where it has none of its own (as
  CLIP_benchmark falls back); "{c}" marks the class name."""
  return list(_first_found(_prompts()["templates"], (task.key, task.short_name, "imagenet1k")))


def imagenet_subset_labels(task: Task) -> list[int]:
  """The 1,000-class labels of the task's ImageNet subset, ascending: label i of the narrowed
  space is the i-th of them."""
  wanted = set(_prompts()["imagenet_subsets"][task.tfds.imagenet_subset])
  return [label for label, wnid in enumerate(_prompts()["imagenet_wnids"]) if wnid in wanted]
