"""The package's shape, read from its source: the import graph of ``keras_mld`` has no cycle
(imports inside functions count: a lazy import that closes a circle is still a circle),
nothing inside imports through the root ``keras_mld`` namespace, the registry is a leaf, the
application is imported by no library module, every architecture folder registers itself,
and no module uses another module's underscore names."""
import ast
import graphlib
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_mld"


def _module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name):
    """The module of ``keras_mld`` that an imported dotted name lands in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module):
    """``[(imported dotted name, names taken, line)]`` of every import in ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            found.append((base, tuple(a.name for a in node.names), node.lineno))
    return found


def _graph():
    """``{module: {modules it imports}}`` inside keras_mld. ``from pkg import sub`` is an
    edge to ``pkg`` (its ``__init__``) and, when ``sub`` is a module, to ``pkg.sub``."""
    graph = {m: set() for m in MODULES}
    for module in MODULES:
        for name, taken, _ in _imports(module):
            if name != "keras_mld" and not name.startswith("keras_mld."):
                continue
            # ``from pkg import sub`` runs ``pkg/__init__`` too: an edge to both
            targets = [name] + [f"{name}.{t}" for t in taken if f"{name}.{t}" in MODULES]
            for target in filter(None, map(_resolve, targets)):
                if target not in (module, "keras_mld"):
                    graph[module].add(target)
    return graph


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    assert len(graph) > 60 and sum(map(len, graph.values())) > 150  # the graph was read
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")
    assert set(order) == set(MODULES)


def test_a_cycle_would_be_found():
    """The check itself: a circle (a lazy import included) is reported."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(graph).static_order())


def test_nothing_inside_imports_through_the_root_namespace():
    bad = [f"{m}:{line} imports {name}{' ' + str(list(taken)) if taken else ''}"
           for m in MODULES if m not in ("keras_mld", "keras_mld.__main__")
           for name, taken, line in _imports(m) if name == "keras_mld"]
    assert not bad, "import the defining module instead:\n" + "\n".join(bad)


def test_the_root_needs_no_reentrancy_flag():
    text = (PACKAGE / "__init__.py").read_text(encoding="utf-8")
    assert "loading" not in text and "_state" not in text


def test_the_registry_is_a_leaf():
    assert not _graph()["keras_mld.registry"]


def test_no_library_module_imports_the_application():
    graph = _graph()
    bad = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                 if t.startswith("keras_mld.app") and not m.startswith("keras_mld.app")
                 and m != "keras_mld.__main__")
    assert not bad, bad


def test_layers_and_losses_never_import_tensorflow():
    for module in MODULES:
        if module.startswith(("keras_mld.layers", "keras_mld.losses")):
            names = [name for name, _, _ in _imports(module)]
            assert not any(n == "tensorflow" or n.startswith("tensorflow.") for n in names), \
                module


def test_no_module_takes_another_modules_underscore_names():
    bad = []
    for module in MODULES:
        for name, taken, line in _imports(module):
            if not name.startswith("keras_mld"):
                continue
            private = [t for t in taken if t.startswith("_") and not t.startswith("__")]
            if private:
                bad.append(f"{module}:{line} takes {private} from {name}")
    assert not bad, bad


def test_every_architecture_folder_is_registered_by_keras_mld_models():
    folders = sorted(p.name for p in (PACKAGE / "models").iterdir()
                     if (p / "__init__.py").is_file())
    assert {"tresnet", "ml_decoder", "query2label", "ctran", "graph", "keras_apps",
            "gap"} <= set(folders)
    imported = {t.rsplit(".", 1)[-1] for t in _graph()["keras_mld.models"]}
    assert set(folders) <= imported, sorted(set(folders) - imported)


def test_each_head_and_backbone_is_registered_by_its_own_folder():
    # In a fresh process: in this one, tests and the registry's doctest register their own.
    script = (
        "import json, keras_mld\n"
        "from keras_mld import registry\n"
        "keras_mld.list_models()\n"
        "def owner(f):\n"
        "    return getattr(f, 'func', f).__module__\n"
        "print(json.dumps({'heads': {h: owner(registry.get_head(h))\n"
        "                            for h in registry.list_heads()},\n"
        "                  'backbones': {b: owner(registry.get_backbone(b).create)\n"
        "                                for b in registry.list_backbones()}}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    where = {"gap": "gap", "mldecoder": "ml_decoder", "query2label": "query2label",
             "ctran": "ctran", "gat": "graph", "gat+mldecoder": "graph", "mlgcn": "graph"}
    assert sorted(found["heads"]) == sorted(where)
    for head, folder in where.items():
        assert found["heads"][head].startswith(f"keras_mld.models.{folder}."), head
    assert found["backbones"]
    for name, owner in found["backbones"].items():
        folder = "tresnet" if name.startswith("tresnet") else "keras_apps"
        assert owner.startswith(f"keras_mld.models.{folder}."), (name, owner)


def test_every_recipe_with_one_head_is_a_preset_of_that_heads_folder():
    import importlib

    import keras_mld
    from keras_mld import recipes, registry

    keras_mld.list_presets()
    for name in recipes.list_recipes():
        head = recipes.load_recipe(name)["model"].get("head")
        assert (registry.get_preset(name) is not None) == (head is not None), name
        if head is not None:
            folder = registry.get_head(head).__module__.rsplit(".", 1)[0]
            presets = importlib.import_module(f"{folder}.presets")
            assert name in presets.RECIPE_PRESETS, (name, folder)


def test_one_name_per_head_with_the_old_class_name_kept_for_old_files():
    import keras

    import keras_mld.layers as layers

    assert issubclass(layers.TransformerDecoderHead, layers.Query2LabelHead)
    assert keras.saving.get_registered_name(layers.Query2LabelHead) == "keras_mld>Query2LabelHead"
    assert keras.saving.get_registered_object("keras_mld>TransformerDecoderHead") \
        is layers.TransformerDecoderHead
    # the builder, the converter and the docs use the one name
    import keras_mld

    model = keras_mld.build("small_convnet", head="query2label", num_classes=3,
                            input_shape=(32, 32, 3), hidden_dim=8, num_heads=2, ff_dim=16,
                            keep_input_proj=True)
    assert type(model.get_layer("query2label")) is layers.Query2LabelHead
