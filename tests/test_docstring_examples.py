"""The ``Examples:`` in the docstrings run and print what they say (doctest), and every public
entry point (``keras_mld.build``, ``keras_mld.ImageClassifier``, each head layer, the losses,
the metrics, the exporters, ``keras_mld.convert.read_state_dict``) has one."""
import doctest
import importlib
import pkgutil

import keras
import pytest

import keras_mld

# TensorFlow-only modules (tf.data, SavedModel) run on the TensorFlow backend only
TF_ONLY = ("keras_mld.export", "keras_mld.data", "keras_mld.training", "keras_mld.app",
           "keras_mld.models.builder")

ENTRY_POINTS = [
    "keras_mld.models.builder.build", "keras_mld.recipes.model_arguments",
    "keras_mld.layers.MLDecoder", "keras_mld.layers.GroupDense", "keras_mld.layers.ZSLMLDecoder",
    "keras_mld.layers.GraphAttentionReweight", "keras_mld.layers.MLGCNHead",
    "keras_mld.layers.GlobalPoolHead", "keras_mld.layers.CosineDense",
    "keras_mld.layers.Query2LabelHead", "keras_mld.layers.CTranHead",
    "keras_mld.losses.AsymmetricLoss", "keras_mld.losses.AsymmetricLossSingleLabel",
    "keras_mld.losses.AAMLoss",
    "keras_mld.metrics.mean_average_precision", "keras_mld.metrics.MeanAveragePrecision",
    "keras_mld.metrics.multilabel_report", "keras_mld.metrics.tune_thresholds",
    "keras_mld.metrics.zsl_report",
    "keras_mld.export.export_saved_model", "keras_mld.export.export_zero_shot_saved_model",
    "keras_mld.ImageClassifier", "keras_mld.convert.read_state_dict", "keras_mld.atomic",
    "keras_mld.registry",
]


def _modules():
    names = ["keras_mld"]
    for info in pkgutil.walk_packages(keras_mld.__path__, "keras_mld."):
        if not info.name.endswith(("__main__", ".app.cli")):
            names.append(info.name)
    return sorted(names)


def _tests():
    finder = doctest.DocTestFinder(exclude_empty=True)  # objects of the module itself only
    found = {}
    for name in _modules():
        if keras.backend.backend() != "tensorflow" and name.startswith(TF_ONLY):
            continue
        for test in finder.find(importlib.import_module(name), name):
            if test.examples:
                found.setdefault((test.filename, test.lineno), test)
    return sorted(found.values(), key=lambda t: t.name)


TESTS = _tests()


def _resolve(dotted):
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_public_entry_point_has_a_runnable_example(entry):
    doc = _resolve(entry).__doc__ or ""
    assert "Examples:" in doc and ">>>" in doc, f"{entry}: add an 'Examples:' section"


def test_examples_are_found():
    names = {t.name for t in TESTS}
    assert "keras_mld.validation" in names
    assert "keras_mld.models.ml_decoder.ml_decoder.MLDecoder" in names


@pytest.mark.parametrize("test", TESTS, ids=[t.name for t in TESTS])
def test_docstring_example(test, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes files writes them here
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    lines = []
    runner.run(test, out=lines.append, clear_globs=True)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(lines)
