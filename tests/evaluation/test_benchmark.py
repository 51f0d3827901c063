"""The benchmark suite: DataComp's task list, CLIP_benchmark's class names, templates and metrics
(its own code, on the same features), the WebDataset and TFDS readers, and absent data."""

import ast
import importlib.resources
import json
import os
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
import torch
from clip_benchmark.metrics import zeroshot_classification as reference_classification
from clip_benchmark.metrics import zeroshot_retrieval as reference_retrieval
from sklearn import metrics as sklearn_metrics

from clip_jax import image_preparation
from clip_jax import settings
from clip_jax.evaluation import benchmark
from clip_jax.evaluation import benchmark_tasks
from clip_jax.evaluation import evaluators
from input_pipeline import tokenizers
import benchmark_sets

# open_clip's docs/openclip_results.csv header after name and pretrained: the average, then the
# 38 tasks in its order.
OPEN_CLIP_COLUMNS = (
    "ImageNet 1k,Caltech-101,CIFAR-10,CIFAR-100,CLEVR Counts,CLEVR Distance,Country211,"
    "Describable Textures,EuroSAT,FGVC Aircraft,Food-101,GTSRB,ImageNet Sketch,ImageNet v2,"
    "ImageNet-A,ImageNet-O,ImageNet-R,KITTI Vehicle Distance,MNIST,ObjectNet,Oxford Flowers-102,"
    "Oxford-IIIT Pet,Pascal VOC 2007,PatchCamelyon,Rendered SST2,RESISC45,Stanford Cars,STL-10,"
    "SUN397,SVHN,Flickr,MSCOCO,WinoGAViL,iWildCam,Camelyon17,FMoW,Dollar Street,GeoDE").split(",")
# DataComp's tasklist.yml: the tasks whose main metric is not acc1.
MAIN_METRICS = {"vtab/caltech101": "mean_per_class_recall",
                "fgvc_aircraft": "mean_per_class_recall", "vtab/flowers": "mean_per_class_recall",
                "vtab/pets": "mean_per_class_recall", "retrieval/flickr30k": "mean_recall@1",
                "retrieval/mscoco_2014_5k_test_image_text_retrieval": "mean_recall@1",
                "misc/winogavil": "jaccard_score_10-12", "wilds/iwildcam": "F1-macro_all",
                "wilds/fmow": "acc_worst_region", "fairness/dollar_street": "acc_top5_wg",
                "fairness/geode": "acc_wg"}

EMBED = 12
_RANDOM = np.random.default_rng(0)
_IMAGE_PROJECTION = _RANDOM.normal(size=(12, EMBED))  # quadrant colours -> features
_TOKEN_EMBEDDINGS = _RANDOM.normal(size=(49_408, EMBED))
TOKENIZE = tokenizers.create_tokenizer(settings.data_settings(context_length=16)).tokenize


def encode_image(images: np.ndarray) -> np.ndarray:
  """A stand-in image tower: its four quadrants' mean colours, projected. [b, E]"""
  half = images.shape[1] // 2
  quadrants = [images[:, rows, columns].mean(axis=(1, 2)) for rows in (slice(None, half),
               slice(half, None)) for columns in (slice(None, half), slice(half, None))]
  return ((np.concatenate(quadrants, axis=-1) / 255.0 - 0.5) @ _IMAGE_PROJECTION).astype(
      np.float32)


def encode_text(tokens: np.ndarray) -> np.ndarray:
  """A stand-in text tower: the sum of its tokens' embeddings. [b, E]"""
  return _TOKEN_EMBEDDINGS[tokens].sum(axis=1).astype(np.float32)


MODEL = benchmark.Model(encode_image, encode_text, TOKENIZE, benchmark_sets.IMAGE_SIZE)


class _TorchModel:
  """The stand-in towers as CLIP_benchmark calls a model."""

  def encode_image(self, images):
    return torch.from_numpy(encode_image(images.numpy()))

  def encode_text(self, tokens):
    return torch.from_numpy(encode_text(tokens.numpy()))


class _Loader(list):
  """A list of batches with the `.dataset.classes` CLIP_benchmark reads."""

  def __init__(self, batches, classes=None):
    super().__init__(batches)
    self.dataset = type("Dataset", (), {"classes": classes})()


def _reference_tokenize(texts):
  return torch.from_numpy(TOKENIZE(texts))


def _one_number(value):
  return float(np.asarray(value).item())


def reference_classification_metrics(images, labels, classnames, templates):
  loader = _Loader([(torch.from_numpy(images[start:start + 5]),
                     torch.from_numpy(labels[start:start + 5]))
                    for start in range(0, len(images), 5)], classnames)
  # CLIP_benchmark 1.6.2's accuracy() calls float() on a one-element array, which NumPy 2.4
  # refuses: its module gets a float that takes one.
  with mock.patch.object(reference_classification, "float", _one_number, create=True):
    return reference_classification.evaluate(_TorchModel(), loader, _reference_tokenize,
                                             classnames, templates, "cpu", amp=False)


def test_the_suite_is_datacomps_38_tasks_in_open_clips_columns():
  tasks = benchmark_tasks.suite_tasks("datacomp")
  assert [task.title for task in tasks] == OPEN_CLIP_COLUMNS
  assert {task.key: task.main_metric for task in tasks
          if task.main_metric != "acc1"} == MAIN_METRICS
  for name, keys in benchmark_tasks.SUITES.items():
    assert {task.key for task in benchmark_tasks.suite_tasks(name)} == set(keys), name
  assert [task.key for task in benchmark_tasks.suite_tasks("mnist,imagenet1k")] == [
      "imagenet1k", "mnist"]
  with pytest.raises(ValueError, match=r"suite 'mnist,cifar11'.*cifar11 unknown; allowed: "
                                       r"datacomp, imagenet_shifts"):
    benchmark_tasks.suite_tasks("mnist,cifar11")


def _clip_benchmark_file(name):
  return importlib.resources.files("clip_benchmark.datasets") / name


def _clip_benchmark_imagenet_subsets():
  """The WordNet ids of CLIP_benchmark's builder.py (read, not imported: it needs torchvision)."""
  lists = {}
  for node in ast.walk(ast.parse(_clip_benchmark_file("builder.py").read_text())):
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
      if node.targets[0].id.startswith(("imagenet_", "all_imagenet_")):
        if node.targets[0].id.endswith("wnids") or node.targets[0].id.endswith("wordnet_ids"):
          lists[node.targets[0].id] = list(ast.literal_eval(node.value))
  return lists


def test_class_names_and_templates_are_clip_benchmarks():
  classnames = json.loads(_clip_benchmark_file("en_classnames.json").read_text())
  templates = json.loads(_clip_benchmark_file("en_zeroshot_classification_templates.json")
                         .read_text())
  wnids = _clip_benchmark_imagenet_subsets()
  for task in benchmark_tasks.TASKS:
    keys = (task.key, task.short_name)  # CLIP_benchmark's lookup: the name, then without vtab/
    expected_names = next((classnames[key] for key in keys if key in classnames), None)
    if task.key in ("imagenet-a", "imagenet-r", "imagenet-o"):
      wanted = set(wnids[f"imagenet_{task.key[-1]}_wnids"])
      expected_names = [name for name, wnid in zip(classnames["imagenet1k"],
                                                   wnids["all_imagenet_wordnet_ids"])
                        if wnid in wanted]
      assert len(expected_names) == task.num_classes == 200
    elif task.key in ("imagenetv2", "imagenet_sketch"):
      expected_names = classnames["imagenet1k"]
    assert benchmark_tasks.classnames(task) == expected_names, task.key
    expected_templates = next(templates[key] for key in (*keys, "imagenet1k") if key in templates)
    assert benchmark_tasks.templates(task) == expected_templates, task.key
  subset = benchmark_tasks.TASKS_BY_KEY["imagenet-r"]
  labels = benchmark_tasks.imagenet_subset_labels(subset)
  assert [classnames["imagenet1k"][label] for label in labels] == benchmark_tasks.classnames(subset)


def test_every_tfds_source_is_a_tfds_dataset():
  known = set(tfds.list_builders())
  for task in benchmark_tasks.TASKS_BY_KEY.values():
    if task.tfds:
      assert task.tfds.name.split("/")[0] in known, task.key


def _write_suite(root):
  """Five tasks in the WebDataset layout, one of each kind of metric: a classification set with
  its own class names and templates (webp), one taking CLIP_benchmark's (png), WILDS sets with
  metadata (worst region and year; macro F1), Dollar Street (top-5 of the worst income group) and
  COCO retrieval in CLIP_benchmark's folder name. Returns what a reference needs of each."""
  made = {}
  images = benchmark_sets.random_images(30, seed=1)
  labels = np.random.default_rng(1).integers(0, 10, 30)
  names, templates = [f"thing {index}" for index in range(10)], ["a {c}.", "a photo of the {c}."]
  benchmark_sets.write_task(os.path.join(root, "wds_cifar10_test"),
                            benchmark_sets.classification_samples(images, labels),
                            classnames=names, templates=templates)
  made["cifar10"] = (images, labels, names, templates)
  images = benchmark_sets.random_images(12, seed=2)
  labels = np.random.default_rng(2).integers(0, 2, 12)
  benchmark_sets.write_task(os.path.join(root, "wds_vtab-pcam"),  # CLIP_benchmark's name
                            benchmark_sets.classification_samples(images, labels, extension="png"))
  task = benchmark_tasks.TASKS_BY_KEY["vtab/pcam"]
  made["vtab/pcam"] = (images, labels, benchmark_tasks.classnames(task),
                       benchmark_tasks.templates(task))
  for key, count, classes, seed in (("wilds/fmow", 40, 6, 3), ("wilds/iwildcam", 40, 7, 4),
                                    ("fairness/dollar_street", 40, 9, 5)):
    images = benchmark_sets.random_images(count, seed=seed)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, count)
    metadata = np.stack([rng.integers(0, 4, count), rng.integers(0, 3, count), labels], axis=1)
    names = [f"kind {index}" for index in range(classes)]
    folder = f"wds_{key.removeprefix('fairness/').replace('/', '-')}_test"
    benchmark_sets.write_task(os.path.join(root, folder),
                              benchmark_sets.classification_samples(images, labels, metadata),
                              classnames=names, templates=["a photo of a {c}."])
    made[key] = (images, labels, names, ["a photo of a {c}."], metadata)
  images = benchmark_sets.random_images(12, seed=6)
  captions = [[f"caption {index} {copy}" for copy in range(1 + index % 3)] for index in range(12)]
  benchmark_sets.write_task(os.path.join(root, "wds_mscoco_captions"),
                            benchmark_sets.retrieval_samples(images, captions),
                            dataset_type="retrieval")
  made["retrieval/mscoco_2014_5k_test_image_text_retrieval"] = (images, captions)
  # Flickr30k and WinoGAViL as DataComp's scripts cache them (Hugging Face datasets).
  images = benchmark_sets.random_images(11, seed=8)
  captions = [[f"flickr {index}", f"photo {index} of flickr"] for index in range(11)]
  benchmark_sets.write_hugging_face_cache(root, "flickr30k", [
      {"image": benchmark_sets.encode(image, "png"), "caption": texts, "split": "test"}
      for image, texts in zip(images, captions)], image_columns=("image",))
  made["retrieval/flickr30k"] = (images, captions)
  rng = np.random.default_rng(9)
  cues = ["apple", "Dog", "ice", "tree", "umbrella", "cloud", "stone", "owl"]
  instances = []
  for index, cue in enumerate(cues):
    count = (5, 6, 10, 12)[index % 4]
    candidates = [f"c{index}-{number}" for number in range(count)]
    associations = list(rng.choice(candidates, size=2 + index % 3, replace=False))
    instances.append(dict(cue=cue, candidates=candidates, associations=associations,
                          images=benchmark_sets.random_images(count, seed=20 + index)))
  benchmark_sets.write_hugging_face_cache(root, "winogavil", [
      {"ID": index, "cue": item["cue"], "candidates": item["candidates"],
       "associations": item["associations"],
       "candidate_images": [benchmark_sets.encode(image, "png") for image in item["images"]]}
      for index, item in enumerate(instances)], image_columns=("candidate_images",))
  made["misc/winogavil"] = instances
  return made


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("benchmark"))
  made = _write_suite(root)
  saved = []
  tasks = benchmark_tasks.suite_tasks(",".join(made) + ",imagenet-o,gtsrb")
  results = benchmark.evaluate_suite(tasks, MODEL, data_dir=root, batch_size=8,
                                     save=lambda results: saved.append(json.loads(
                                         json.dumps(results))))
  return root, made, tasks, results, saved


def test_classification_equals_clip_benchmarks_code_on_the_same_features(suite):
  _, made, _, results, _ = suite
  for key in ("cifar10", "vtab/pcam", "wilds/fmow", "wilds/iwildcam", "fairness/dollar_street"):
    images, labels, names, templates = made[key][:4]
    expected = reference_classification_metrics(images, labels, names, templates)
    ours = results["tasks"][key]["metrics"]
    assert ours["acc1"] == pytest.approx(expected["acc1"], abs=1e-9), key
    assert ours["mean_per_class_recall"] == pytest.approx(expected["mean_per_class_recall"],
                                                          abs=1e-9), key
    if len(names) >= 5:
      assert ours["acc5"] == pytest.approx(expected["acc5"], abs=1e-9), key
    else:
      assert "acc5" not in ours
    assert results["tasks"][key]["images"] == len(images)
  assert 0.0 < results["tasks"]["cifar10"]["metrics"]["acc5"] < 1.0  # not a degenerate case


def _reference_predictions(key, made):
  images, _, names, templates = made[key][:4]
  model = _TorchModel()
  classifier = reference_classification.zero_shot_classifier(
      model, _reference_tokenize, names, templates, "cpu", amp=False)
  logits, _ = reference_classification.run_classification(
      model, classifier, [(torch.from_numpy(images), torch.zeros(len(images)))], "cpu", amp=False)
  return logits.numpy()


def _worst_group(correct, groups):
  return min(correct[groups == group].mean() for group in set(groups.tolist()))


def test_wilds_and_fairness_metrics_are_datacomps(suite):
  """Worst-group accuracies as WILDS computes them (per value of a metadata column, the lowest),
  macro F1 as scikit-learn's over the labels present, on CLIP_benchmark's logits."""
  _, made, _, results, _ = suite
  logits = _reference_predictions("wilds/fmow", made)
  _, labels, _, _, metadata = made["wilds/fmow"]
  correct = logits.argmax(axis=1) == labels
  fmow = results["tasks"]["wilds/fmow"]["metrics"]
  assert fmow["acc_worst_region"] == pytest.approx(_worst_group(correct, metadata[:, 0]))
  assert fmow["acc_worst_year"] == pytest.approx(_worst_group(correct, metadata[:, 1]))
  assert fmow["main_metric"] == fmow["acc_worst_region"] < fmow["acc1"]
  logits = _reference_predictions("wilds/iwildcam", made)
  labels = made["wilds/iwildcam"][1]
  assert results["tasks"]["wilds/iwildcam"]["metrics"]["F1-macro_all"] == pytest.approx(
      sklearn_metrics.f1_score(labels, logits.argmax(axis=1), average="macro",
                               labels=np.unique(labels)))
  logits = _reference_predictions("fairness/dollar_street", made)
  _, labels, _, _, metadata = made["fairness/dollar_street"]
  top5 = (np.argsort(-logits, axis=1)[:, :5] == labels[:, None]).any(axis=1)
  dollar_street = results["tasks"]["fairness/dollar_street"]["metrics"]
  assert dollar_street["acc_top5_wg"] == pytest.approx(_worst_group(top5, metadata[:, 0]))
  assert dollar_street["main_metric"] == dollar_street["acc_top5_wg"]


def test_retrieval_equals_clip_benchmarks_code_on_the_same_features(suite):
  _, made, _, results, _ = suite
  images, captions = made["retrieval/mscoco_2014_5k_test_image_text_retrieval"]
  loader = [(torch.from_numpy(images[start:start + 5]), captions[start:start + 5])
            for start in range(0, len(images), 5)]
  expected = reference_retrieval.evaluate(_TorchModel(), loader, _reference_tokenize, "cpu",
                                          amp=False, recall_k_list=[1, 5, 10])
  ours = results["tasks"]["retrieval/mscoco_2014_5k_test_image_text_retrieval"]["metrics"]
  for name, value in expected.items():  # CLIP_benchmark's are float32 means
    assert ours[name] == pytest.approx(value, abs=1e-6), name
  assert ours["main_metric"] == ours["mean_recall@1"] == pytest.approx(
      (expected["image_retrieval_recall@1"] + expected["text_retrieval_recall@1"]) / 2)
  assert 0.0 < ours["image_retrieval_recall@1"] < ours["image_retrieval_recall@5"]


def test_retrieval_from_the_hugging_face_cache_equals_clip_benchmarks(suite):
  """Flickr30k as DataComp reads it (Hugging Face's nlphuji/flickr30k), images stored inline
  and by path."""
  _, made, _, results, _ = suite
  images, captions = made["retrieval/flickr30k"]
  expected = reference_retrieval.evaluate(
      _TorchModel(), [(torch.from_numpy(images), captions)], _reference_tokenize, "cpu",
      amp=False, recall_k_list=[1, 5, 10])
  ours = results["tasks"]["retrieval/flickr30k"]
  for name, value in expected.items():
    assert ours["metrics"][name] == pytest.approx(value, abs=1e-6), name
  assert ours["images"] == 11 and ours["data"].endswith("flickr30k-test.arrow")


def test_winogavil_is_scored_as_datacomp_scores_it(suite):
  """Per cue, DataComp's choice (the top-n candidates by similarity to "A/An <cue>", n its
  associations) against the associations by scikit-learn's Jaccard index."""
  _, made, _, results, _ = suite
  prompts = {"apple": "An apple", "Dog": "A dog", "ice": "An ice", "tree": "A tree",
             "umbrella": "An umbrella", "cloud": "A cloud", "stone": "A stone", "owl": "An owl"}
  scores, sizes = [], []
  for item in made["misc/winogavil"]:
    text = encode_text(TOKENIZE([prompts[item["cue"]]]))
    image = encode_image(item["images"])
    logits = (text / np.linalg.norm(text)) @ (
        image / np.linalg.norm(image, axis=1, keepdims=True)).T
    truth = np.isin(item["candidates"], item["associations"])
    chosen = np.isin(np.arange(len(truth)), np.argsort(logits[0])[-truth.sum():])
    scores.append(sklearn_metrics.jaccard_score(truth, chosen))
    sizes.append(len(truth))
  scores, sizes = np.array(scores), np.array(sizes)
  ours = results["tasks"]["misc/winogavil"]["metrics"]
  assert ours["jaccard_score_10-12"] == pytest.approx(scores[sizes >= 10].mean())
  assert ours["jaccard_score_5-6"] == pytest.approx(scores[sizes <= 6].mean())
  assert ours["avg_jaccard_score"] == pytest.approx(scores.mean())
  assert ours["main_metric"] == ours["jaccard_score_10-12"]
  assert results["tasks"]["misc/winogavil"]["images"] == sizes.sum()


def test_absent_tasks_are_reported_absent_and_left_out_of_the_average(suite):
  root, made, tasks, results, saved = suite
  assert set(results["tasks"]) == set(made)
  assert "no wds_imagenet-o_test or wds_imagenet-o in" in results["absent"]["imagenet-o"]
  assert set(results["absent"]) == {"imagenet-o", "gtsrb"}
  mean, covered = benchmark.average(tasks, results)
  assert covered == len(made)
  assert mean == pytest.approx(np.mean([results["tasks"][key]["metrics"]["main_metric"]
                                        for key in made]))
  header, row = benchmark.results_table(tasks, results, name="stand-in",
                                        pretrained="").splitlines()
  assert header.split(",")[:3] == ["name", "pretrained", f"Average perf. on {len(made)} datasets"]
  cells = dict(zip(header.split(","), row.split(",")))
  assert cells["ImageNet-O"] == cells["GTSRB"] == "" != cells["WinoGAViL"]
  assert float(cells["FMoW"]) == pytest.approx(
      results["tasks"]["wilds/fmow"]["metrics"]["main_metric"], abs=1e-4)
  # Saved after each task run, never for the absent ones.
  assert [len(entry["tasks"]) for entry in saved] == list(range(1, len(made) + 1))
  lines = benchmark.summary_lines(tasks, results)
  assert lines[-1].startswith("Average")
  assert f"over {len(made)} of {len(tasks)} tasks" in lines[-1]


def test_a_resumed_suite_keeps_the_tasks_done(suite, tmp_path):
  root, made, tasks, results, saved = suite
  done = {"tasks": {key: results["tasks"][key] for key in list(made)[:2]}}
  calls = []
  rerun = benchmark.evaluate_suite(tasks, MODEL, data_dir=root, batch_size=8, results=done,
                                   save=lambda results: calls.append(set(results["tasks"])))
  assert {key: entry["metrics"] for key, entry in rerun["tasks"].items()} == {
      key: entry["metrics"] for key, entry in results["tasks"].items()}
  assert [rerun["tasks"][key] is done["tasks"][key] for key in done["tasks"]] == [True, True]
  assert len(calls) == len(made) - 2  # only the tasks not done ran


def test_tfds_tasks_read_mock_data():
  """TFDS's copies: a classification set, ImageNet-A among its 200 classes, COCO's captions."""
  tasks = benchmark_tasks.suite_tasks("cifar10,imagenet-a,"
                                      "retrieval/mscoco_2014_5k_test_image_text_retrieval")
  results = benchmark.evaluate_suite(tasks, MODEL, data_dir="", batch_size=8, mock_examples=6)
  assert not results["absent"]
  for key, entry in results["tasks"].items():
    assert entry["data"].startswith("TFDS ") and entry["images"] == 6, key
    assert 0.0 <= entry["metrics"]["main_metric"] <= 1.0
  assert "image_retrieval_recall@10" in results["tasks"][tasks[2].key]["metrics"]


def test_the_clip_papers_linear_probes_fit_on_tfds_data():
  """The 27 datasets of the CLIP paper's linear-probe table; those with a TFDS copy are probed
  (here on mock data), the others reported absent."""
  tasks = benchmark_tasks.suite_tasks("clip_linear_probe")
  assert len(tasks) == 27 and sum(task.tfds is not None for task in tasks) == 15
  picked = benchmark_tasks.suite_tasks("linear_probe/cifar10,linear_probe/birdsnap")
  results = benchmark.evaluate_suite(picked, MODEL, data_dir="", batch_size=8, mock_examples=24)
  probe = results["tasks"]["linear_probe/cifar10"]
  assert 0.0 <= probe["metrics"]["main_metric"] == probe["metrics"]["top1"] <= 1.0
  assert probe["metrics"]["l2"] > 0 and probe["images"] == 3 * 24  # train, validation, test
  assert "no TFDS copy" in results["absent"]["linear_probe/birdsnap"]


def test_a_sample_without_its_label_stops_the_task_naming_its_shard(tmp_path):
  images = benchmark_sets.random_images(3, seed=7)
  samples = benchmark_sets.classification_samples(images, np.zeros(3, int))
  del samples[1]["cls"]
  benchmark_sets.write_task(str(tmp_path / "wds_mnist_test"), samples)
  with pytest.raises(ValueError, match=r"0\.tar: sample 's0000001' has no cls \(members: webp\)"):
    benchmark.evaluate_suite(benchmark_tasks.suite_tasks("mnist"), MODEL, data_dir=str(tmp_path),
                             batch_size=8)
  samples = benchmark_sets.classification_samples(images, np.array([0, 1, 12]))
  benchmark_sets.write_task(str(tmp_path / "wds_mnist_test"), samples)
  with pytest.raises(ValueError, match=r"mnist: .*wds_mnist_test has label 12 but 10 class names"):
    benchmark.evaluate_suite(benchmark_tasks.suite_tasks("mnist"), MODEL, data_dir=str(tmp_path),
                             batch_size=8)


def test_the_synthetic_suite_runs_as_a_training_evaluator():
  """The benchmark evaluator on the synthetic world's tasks, their data written from the training
  settings: one metric per task, the average, the count and the time, as a run logs them."""
  data = settings.data_settings(image_size=benchmark_sets.IMAGE_SIZE, context_length=16)
  evals = {"suite": settings.Evaluator(type="benchmark", dataset="synthetic", num_images=40,
                                       batch_size=16, every_steps=5)}
  evaluators.check_data(evals)
  metrics = evaluators.run_evaluators(evals, encode_image, encode_text, 5, data=data,
                                      view=image_preparation.Preprocessing())
  tasks = benchmark_tasks.suite_tasks("synthetic")
  assert set(metrics) == {*(f"suite/{task.key}" for task in tasks), "suite/average",
                          "suite/tasks_covered", "suite/seconds"}
  assert metrics["suite/tasks_covered"] == 3 and metrics["suite/seconds"] > 0
  assert metrics["suite/average"] == pytest.approx(np.mean([metrics[f"suite/{task.key}"]
                                                            for task in tasks]))
  assert evaluators.summary_lines(evals, metrics)[0].startswith("suite: synthetic/shape ")


def test_a_benchmark_evaluator_names_an_unknown_suite():
  evals = {"quick": settings.Evaluator(type="benchmark", dataset="quik")}
  with pytest.raises(ValueError, match=r"evals\.quick\.dataset: suite 'quik': quik unknown; "
                                       r"allowed: datacomp, "):
    evaluators.check_data(evals)
