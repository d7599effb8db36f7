"""SavedModel export: versions (next free, refuse, overwrite), nothing left behind by a crash
at any step, the argument checks (each a ValueError naming the argument), thresholds by
class name, and ``keras-mld predict`` on an export."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mld.export import export_saved_model, saved_model as sm
from keras_mld.export.warmup import encode_image, sample_image
from tests.support.tiny import EXPORT_LABELS as LABELS, tiny_classifier as _tiny


@pytest.fixture(scope="module")
def small():
    keras.utils.set_random_seed(2)
    return _tiny("multilabel_logits", (16, 16, 3))()


def _listing(base):
    return sorted(os.listdir(base)) if os.path.isdir(base) else []


def _raise(*a, **k):
    raise RuntimeError("injected crash")


@pytest.mark.parametrize("where", ["_save", "write_warmup_requests", "_verify_export",
                                   "rename"])
def test_crash_mid_export_leaves_nothing(small, tmp_path, monkeypatch, where):
    import keras_mld.atomic as atomic

    module, name = (atomic, "_publish_dir") if where == "rename" else (sm, where)
    real = getattr(module, name)

    def crash_after(*a, **k):  # let the step write its files (not the rename), then fail
        if where != "rename":
            real(*a, **k)
        raise RuntimeError("injected crash")

    monkeypatch.setattr(module, name, crash_after)
    with pytest.raises(RuntimeError, match="injected crash"):
        export_saved_model(small, tmp_path / "m", LABELS)
    assert _listing(tmp_path / "m") == []  # no version, no .tmp-*, no models.config


def test_crash_during_overwrite_keeps_old_version(small, tmp_path, monkeypatch):
    base = tmp_path / "m"
    path = export_saved_model(small, base, LABELS)
    open(os.path.join(path, "marker"), "w").close()
    monkeypatch.setattr(sm, "_verify_export", _raise)
    with pytest.raises(RuntimeError, match="injected crash"):
        export_saved_model(small, base, LABELS, version=1, overwrite=True)
    assert _listing(base) == ["1", "models.config"]
    assert os.path.exists(os.path.join(path, "marker"))


def test_versions_increment_refuse_and_overwrite(small, tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    base = tmp_path / "coco"
    for d in ("1", "7", "notaversion", ".tmp-9-stale"):
        os.makedirs(base / d)
    path = export_saved_model(small, base, LABELS)
    assert path == str(base / "8") and os.path.isfile(os.path.join(path, "saved_model.pb"))
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o777 & ~umask  # like os.makedirs, not mkdtemp
    with pytest.raises(FileExistsError, match="version 8 already exists"):
        export_saved_model(small, base, LABELS, version=8)
    open(os.path.join(path, "old-marker"), "w").close()
    assert export_saved_model(small, base, LABELS, version=8, overwrite=True,
                              thresholds=0.9) == path
    assert not os.path.exists(os.path.join(path, "old-marker"))
    assert json.load(open(os.path.join(path, "assets", "keras_mld.json")))["thresholds"][0] == \
        pytest.approx(0.9)
    assert export_saved_model(small, base, LABELS, version=3).endswith(os.sep + "3")
    assert [d for d in _listing(base) if d.startswith(".") and d != ".tmp-9-stale"] == []
    config = text_format.Parse(open(base / "models.config").read(),
                               model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert entry.name == "coco" and entry.base_path == str(base)
    assert entry.model_platform == "tensorflow"
    assert list(entry.model_version_policy.specific.versions) == [3, 8]


@pytest.mark.parametrize("kwargs, match", [
    ({"labels": LABELS[:4]}, "labels has 4 names"),
    ({"labels": LABELS[:4] + ["person"]}, "unique"),
    ({"labels": LABELS[:4] + [""]}, "non-empty"),
    ({"labels": "abcde"}, "labels: expected a list of unique"),
    ({"labels": None}, "labels must be .*class names"),
    ({"thresholds": [0.5] * 4}, "thresholds: expected .* 5 floats"),
    ({"thresholds": {"unicorn": 0.3}}, "thresholds: unknown class names"),
    ({"thresholds": "high"}, "thresholds: expected None, a float"),
    ({"image_size": 1.5}, "image_size must be"),
    ({"thresholds": [0.5, 0.5, 0.5, 0.5, 1.5]}, r"values in \[0, 1\]"),
    ({"thresholds": [0.5, 0.5, 0.5, 0.5, float("nan")]}, r"values in \[0, 1\]"),
    ({"version": 0}, "version must be"),
    ({"version": True}, "version must be"),
    ({"version": "2"}, "version must be"),
    ({"task": "multiclass"}, "task must be"),
    ({"top_k": 0}, "top_k must be"),
    ({"image_size": (20, 16)}, "differs from the model"),
])
def test_invalid_arguments(small, tmp_path, kwargs, match):
    kwargs = {"labels": LABELS, **kwargs}
    with pytest.raises(ValueError, match=match):
        export_saved_model(small, tmp_path / "m", **kwargs)
    assert _listing(tmp_path / "m") == []


def test_dynamic_input_needs_image_size(tmp_path):
    model = _tiny("multilabel_logits", (None, None, 3))()
    with pytest.raises(ValueError, match="pass image_size"):
        export_saved_model(model, tmp_path / "m", LABELS)


def test_thresholds_by_class_name_and_numpy_image_size(small, tmp_path):
    # thresholds as a {class name: value} dict (as ImageClassifier takes them), others 0.5;
    # image_size as a numpy integer
    path = export_saved_model(small, tmp_path / "m", LABELS, thresholds={LABELS[1]: 0.2},
                              image_size=np.int64(16))
    meta = tf.saved_model.load(path).signatures["metadata"]()
    np.testing.assert_allclose(meta["thresholds"].numpy(), [0.5, 0.2, 0.5, 0.5, 0.5])
    assert list(meta["image_size"].numpy()) == [16, 16]


def test_predict_on_an_export_names_a_bad_file_and_chunks_requests(small, tmp_path, monkeypatch):
    # keras-mld predict --model <SavedModel>: requests of at most SERVED_CHUNK images (so a
    # long list stays under the export's max_batch_size), scores equal to one request per
    # image, and a garbage file is named in a ValueError
    from keras_mld.app import workflows

    path = export_saved_model(small, tmp_path / "m", LABELS)
    files = []
    for i in range(5):
        files.append(str(tmp_path / f"{i}.png"))
        with open(files[-1], "wb") as f:
            f.write(encode_image(sample_image(20 + i, 24, seed=i), "png"))
    monkeypatch.setattr(workflows, "SERVED_CHUNK", 2)
    chunked = workflows.predict(path, files, top_k=5, threshold=0.0)
    monkeypatch.setattr(workflows, "SERVED_CHUNK", 1)
    assert workflows.predict(path, files, top_k=5, threshold=0.0) == chunked
    bad = str(tmp_path / "bad.png")
    with open(bad, "wb") as f:
        f.write(b"not an image at all")
    with pytest.raises(ValueError, match="bad.png"):
        workflows.predict(path, files[:3] + [bad], top_k=5)
