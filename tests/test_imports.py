"""The import graph of the packages: no cycles, and layers that point one way
(docs/design.md#layers): settings, models and image_preparation at the bottom, the data package
above settings, evaluation and inference above both, tools and programs on top.

Read from the source (every import statement, those inside functions too), so that a lazy import
added to dodge a cycle still counts as the dependency it is.
"""

import ast
import os

import pytest

REPOSITORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
PACKAGES = ("clip_jax", "input_pipeline")


def project_modules() -> dict[str, str]:
  """Dotted module name -> file, for every module of the packages."""
  modules = {}
  for package in PACKAGES:
    for directory, _, files in os.walk(os.path.join(REPOSITORY, package)):
      for file in files:
        if file.endswith(".py"):
          path = os.path.join(directory, file)
          name = os.path.relpath(path, REPOSITORY)[:-3].replace(os.sep, ".")
          modules[name.removesuffix(".__init__")] = path
  return modules


def import_graph() -> dict[str, set[str]]:
  """Module -> the project modules it imports (`from a import b` imports a.b if that is one)."""
  modules = project_modules()
  graph = {}
  for name, path in modules.items():
    imported = set()
    with open(path) as file:
      tree = ast.parse(file.read())
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        imported.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        for alias in node.names:
          full_name = f"{node.module}.{alias.name}"
          imported.add(full_name if full_name in modules else node.module)
    graph[name] = {module for module in imported if module in modules and module != name}
  return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan's algorithm)."""
  index, low, stack, on_stack, components = {}, {}, [], set(), []

  def visit(module):
    index[module] = low[module] = len(index)
    stack.append(module)
    on_stack.add(module)
    for imported in sorted(graph[module]):
      if imported not in index:
        visit(imported)
        low[module] = min(low[module], low[imported])
      elif imported in on_stack:
        low[module] = min(low[module], index[imported])
    if low[module] == index[module]:
      component = []
      while not component or component[-1] != module:
        component.append(stack.pop())
        on_stack.discard(component[-1])
      if len(component) > 1:
        components.append(sorted(component))

  for module in sorted(graph):
    if module not in index:
      visit(module)
  return components


def test_the_packages_have_no_import_cycles():
  assert cycles(import_graph()) == []


def test_a_planted_cycle_is_found():
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_settings_import_nothing_of_the_project_but_the_registries():
  """The model table and the towers' and losses' registries, which need neither TensorFlow nor
  anything of training. (The data sources, tokenizers and evaluators register in settings' own
  registries from the modules that implement them.)"""
  graph = import_graph()
  assert graph["clip_jax.settings"] == {"clip_jax.models.configs", "clip_jax.models.towers",
                                        "clip_jax.losses", "clip_jax.registry"}
  assert graph["clip_jax.registry"] == set()
  assert graph["clip_jax.losses"] == {"clip_jax.blockwise_losses", "clip_jax.registry"}
  assert graph["clip_jax.blockwise_losses"] == set()
  assert graph["clip_jax.models.configs"] == {
      "clip_jax.models.attention", "clip_jax.models.layers", "clip_jax.models.resnet",
      "clip_jax.models.siglip_vision", "clip_jax.models.towers", "clip_jax.models.vision",
      "clip_jax.image_preparation"}
  assert graph["clip_jax.models.towers"] == {"clip_jax.models.costs", "clip_jax.registry"}
  assert graph["clip_jax.models.layers"] == {"clip_jax.models.attention"}
  assert graph["clip_jax.models.attention"] == set()
  assert graph["clip_jax.image_preparation"] == set()


TOOLS = ("clip_jax.embeddings", "clip_jax.embed", "clip_jax.search", "clip_jax.classify",
         "clip_jax.filter_shards")
PROGRAMS = ("clip_jax.train", "clip_jax.evaluate", "clip_jax.sweep", "clip_jax.plan",
            "clip_jax.doctor", "clip_jax.convert")
# What a layer's modules may import of the project (a module and everything under it).
ALLOWED = {
    "input_pipeline": ("input_pipeline", "clip_jax.settings", "clip_jax.image_preparation",
                       "clip_jax.files", "clip_jax.host_tensorflow"),
    "clip_jax.models": ("clip_jax.models", "clip_jax.image_preparation", "clip_jax.registry"),
}
# What a layer's modules must not import, whatever else they do.
FORBIDDEN = {
    "clip_jax.encoding": ("input_pipeline", "clip_jax.evaluation", *TOOLS, *PROGRAMS),
    "clip_jax.evaluation": (*TOOLS, *PROGRAMS),
    "clip_jax.pretrained": ("clip_jax.evaluation", *TOOLS, *PROGRAMS),
}


def under(module: str, prefix: str) -> bool:
  return module == prefix or module.startswith(prefix + ".")


def layer_imports(layer: str) -> list[tuple[str, str]]:
  """(module, what it imports) for every module of `layer`, which must have some."""
  graph = import_graph()
  modules = [module for module in graph if under(module, layer)]
  assert modules, layer
  return [(module, imported) for module in modules for imported in sorted(graph[module])]


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_what_is_below_it(layer):
  wrong = [f"{module} imports {imported}" for module, imported in layer_imports(layer)
           if not any(under(imported, allowed) for allowed in ALLOWED[layer])]
  assert not wrong


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer):
  wrong = [f"{module} imports {imported}" for module, imported in layer_imports(layer)
           if any(under(imported, above) for above in FORBIDDEN[layer])]
  assert not wrong


def test_no_test_file_imports_another():
  """What tests share lives in helper modules (tests/references.py, tests/tiny_runs.py, ...), so
  that a test file runs, and is read, on its own."""
  tests = os.path.join(REPOSITORY, "tests")
  found = []
  for directory, _, files in os.walk(tests):
    for file in files:
      if file.endswith(".py"):
        with open(os.path.join(directory, file)) as source:
          tree = ast.parse(source.read())
        for node in ast.walk(tree):
          names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                   [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
          found += [(file, name) for name in names if name.split(".")[0].startswith("test_")]
  assert not found, found
