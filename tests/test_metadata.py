"""keras_mld.metadata: the one home of the task names, the class-name and threshold checks
and logits -> scores (used by the task, the builder, the loaders and every exporter)."""
import time

import numpy as np
import pytest

from keras_mld import metadata


def test_class_names():
    assert metadata.check_class_names([b"cat", "dog"]) == ["cat", "dog"]
    for bad, match in [("cat", "list"), (None, "list"), ({"a": 1}, "list"), ([""], "non-empty"),
                       (["a\nb"], "newlines"), (["a", "a"], "duplicates \\['a'\\]"),
                       ([1], "non-empty strings"), (np.array("x"), "list"),
                       ([b"\xff"], "UTF-8")]:
        with pytest.raises(ValueError, match=match):
            metadata.check_class_names(bad)
    with pytest.raises(ValueError, match="labels: the model has 3 classes, got 2"):
        metadata.check_class_names(["a", "b"], 3, argument="labels")


def test_thresholds_all_forms():
    names = ["a", "b", "c"]
    assert metadata.check_thresholds(None, names) == [0.5] * 3
    assert metadata.check_thresholds(0.2, names) == [0.2] * 3
    assert metadata.check_thresholds({"b": 0.1}, names) == [0.5, 0.1, 0.5]
    assert metadata.check_thresholds(np.array([0, 1, 0.5]), names) == [0.0, 1.0, 0.5]
    for bad, match in [({"z": 0.1}, "unknown class names"), ([0.1, 0.2], "shape"),
                       ([0.1, 2.0, 0.1], r"values in \[0, 1\]"), ("x", "expected None"),
                       ([np.nan] * 3, r"\[0, 1\]")]:
        with pytest.raises(ValueError, match=match):
            metadata.check_thresholds(bad, names)


def test_checks_are_linear_in_the_number_of_names():
    """100,000 names (a hostile preset's config.json): checked in well under a second each
    (a quadratic duplicate search would take minutes)."""
    names = [f"class {i}" for i in range(100_000)]
    start = time.process_time()
    metadata.check_class_names(names)
    metadata.check_thresholds({n: 0.3 for n in names[::2]}, names)
    assert time.process_time() - start < 5.0
    with pytest.raises(ValueError, match="duplicates"):
        metadata.check_class_names(names + names[:3])


def test_task_and_scores():
    assert metadata.check_task("singlelabel") == "singlelabel"
    with pytest.raises(ValueError, match="task: expected one of"):
        metadata.check_task("multiclass")
    logits = np.array([[0.0, 2.0, -1.0]], "float32")
    sig = np.asarray(metadata.scores_from_logits(logits, "multilabel"))
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-logits)), rtol=1e-6)
    soft = np.asarray(metadata.scores_from_logits(logits, "singlelabel"))
    np.testing.assert_allclose(soft, np.exp(logits) / np.exp(logits).sum(), rtol=1e-6)
