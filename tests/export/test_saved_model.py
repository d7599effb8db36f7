"""keras_mld.export.export_saved_model (docs/serving.md).

The central check: every signature of every export, run in a fresh interpreter where only
TensorFlow can be imported (``tf_only_runner.py``), matches the in-process Keras model to
1e-5. ``tiny_models()`` is the list of models checked; extend it with new model kinds.
"""
import base64
import dataclasses
import json
import os
import subprocess
import sys
from typing import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mld
from keras_mld.data.image import decode_and_resize
from keras_mld.export import export_saved_model, saved_model as sm
from keras_mld.export.warmup import encode_image, sample_image
from tests.support.tiny import EXPORT_LABELS as LABELS
from tests.support.tiny import NUM_EXPORT_CLASSES as N
from tests.support.tiny import export_features, tiny_classifier as _tiny

pytestmark = pytest.mark.tf_only

RUNNER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support",
                      "tf_only_runner.py")


def run_tf_only_job(root, job):
    """Writes ``job`` to ``root/job.json``, runs ``tf_only_runner.py`` on it in a fresh process
    (which imports only TensorFlow) and returns its report."""
    with open(root / "job.json", "w", encoding="utf-8") as f:
        json.dump(job, f)
    proc = subprocess.run([sys.executable, RUNNER, str(root / "job.json")],
                          capture_output=True, text=True, cwd=str(root), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(job["report"], encoding="utf-8") as f:
        return json.load(f)


@dataclasses.dataclass
class ModelCase:
    id: str
    make: Callable[[], keras.Model]
    task: str                      # the task export must detect / is given
    export_kwargs: dict = dataclasses.field(default_factory=dict)


def _tiny_known_labels():
    images = keras.Input((32, 32, 3), name="images")
    known = keras.Input((N,), name="known_labels")
    x = keras.layers.Concatenate()([export_features(images), keras.layers.Dense(4)(known)])
    logits = keras.layers.Identity(name="multilabel_logits")(keras.layers.Dense(N)(x))
    return keras.Model([images, known], logits)


def _tiny_mixed_float16():
    images = keras.Input((32, 32, 3), name="images")
    x = keras.layers.Rescaling(1.0 / 255.0, dtype="mixed_float16")(images)
    x = keras.layers.Conv2D(6, 3, strides=2, activation="relu", dtype="mixed_float16")(x)
    x = keras.layers.GlobalAveragePooling2D(dtype="mixed_float16")(x)
    logits = keras.layers.Dense(N, dtype="mixed_float16")(x)  # float16 logits
    return keras.Model(images, keras.layers.Identity(name="multilabel_logits")(logits))


def _tiny_backbone():
    images = keras.Input((32, 32, 3))
    return keras.Model(images, keras.layers.Conv2D(8, 3, strides=4, padding="same")(images))


def _graph_kwargs():
    """Word vectors and a label graph for the graph heads (gat, gat+mldecoder, mlgcn)."""
    from keras_mld import zsl

    rng = np.random.default_rng(0)
    labels = (rng.uniform(size=(32, N)) < 0.4).astype("float32")
    return {"label_vectors": rng.normal(size=(N, 7)).astype("float32"),
            "label_graph": zsl.conditional_probability(labels)}


# head name -> extra keras_mld.build kwargs, where a head needs them (small sizes: fast)
BUILD_HEAD_KWARGS = {
    "mldecoder": {"num_groups": 3, "embed_dim": 16, "num_heads": 2, "ff_dim": 32},
    "query2label": {"hidden_dim": 16, "num_heads": 2, "ff_dim": 32, "keep_input_proj": True},
    "ctran": {"embed_dim": 16, "num_heads": 2, "ff_dim": 32},
    "gat": _graph_kwargs(),
    "gat+mldecoder": {**_graph_kwargs(), "num_groups": 3, "embed_dim": 16, "num_heads": 2,
                      "ff_dim": 32},
    "mlgcn": {**_graph_kwargs(), "hidden_dim": 8},
}


def builder_cases():
    """One case per head of ``keras_mld.build``; empty only while the builder is a placeholder."""
    try:
        heads = keras_mld.list_models()["heads"]
    except NotImplementedError:  # the placeholder builders.py; anything else must fail loudly
        return []
    return [ModelCase(f"build-{h}", lambda h=h: keras_mld.build(
        _tiny_backbone(), head=h, num_classes=N, input_shape=(32, 32, 3),
        **BUILD_HEAD_KWARGS.get(h, {})), task="multilabel") for h in heads]


def tiny_models():
    return [
        ModelCase("multilabel", _tiny("multilabel_logits"), "multilabel",
                  {"thresholds": [0.3, 0.4, 0.5, 0.6, 0.7], "top_k": 3}),
        ModelCase("singlelabel", _tiny("singlelabel_logits"), "singlelabel",
                  {"thresholds": [0.15, 0.2, 0.25, 0.2, 0.15], "task": "singlelabel"}),
        ModelCase("unnamed-default-multilabel", _tiny(None), "multilabel", {"thresholds": 0.5}),
        ModelCase("forced-singlelabel", _tiny(None), "singlelabel",
                  {"task": "singlelabel", "thresholds": 0.2, "top_k": 10}),
        ModelCase("dynamic-size", _tiny("multilabel_logits", (None, None, 3)), "multilabel",
                  {"image_size": (24, 40)}),
        ModelCase("known-labels", _tiny_known_labels, "multilabel"),
        ModelCase("mixed-float16", _tiny_mixed_float16, "multilabel"),
    ] + builder_cases()


CASES = tiny_models()


# ----------------------------------------------------------------------------- references
def keras_scores(model, images, task):
    feeds = images
    if any(t.name == "known_labels" for t in model.inputs):
        feeds = {"images": images, "known_labels": -np.ones([len(images), N], np.float32)}
    logits = tf.cast(model(feeds, training=False), tf.float32)
    return (tf.nn.softmax(logits) if task == "singlelabel" else tf.sigmoid(logits)).numpy()


def test_images():
    rgba = np.concatenate([sample_image(20, 30, seed=7), np.full([20, 30, 1], 128, np.uint8)], -1)
    return [encode_image(sample_image(40, 50, seed=4), "png"),
            encode_image(sample_image(30, 20, seed=5), "jpeg"),
            tf.io.encode_png(sample_image(33, 33, seed=6)[..., :1]).numpy(),  # grey
            tf.io.encode_png(rgba).numpy()]


test_images.__test__ = False  # a helper, not a test


def expected_packed_labels(scores, thresholds):
    out = []
    for row in scores:
        chosen = [i for i in np.argsort(-row, kind="stable") if row[i] >= thresholds[i]]
        out.append([LABELS[i] for i in chosen] + [""] * (N - len(chosen)))
    return np.array(out)


# ----------------------------------------------------------------------------- fixture
@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Export every case, run all signatures once in one fresh TF-only process."""
    root = tmp_path_factory.mktemp("exports")
    rng = np.random.default_rng(0)
    blobs = test_images()
    results, job = {}, {"cases": [], "report": str(root / "report.json")}
    for case in CASES:
        res = results[case.id] = {"case": case}
        try:
            keras.utils.set_random_seed(1)
            model = case.make()
            path = export_saved_model(model, root / case.id, LABELS, **case.export_kwargs)
        except Exception as e:  # raised again by the tests of this case only
            res["error"] = e
            continue
        size = tuple(json.load(open(os.path.join(path, "assets", "keras_mld.json")))["image_size"])
        images = rng.uniform(0, 255, size=(3,) + size + (3,)).astype(np.float32)
        np.savez(root / f"{case.id}-in.npz", **{"serving_default/images": images})
        res.update(model=model, path=path, images=images, blobs=blobs, size=size)
        if case.id == "multilabel":  # runs while the other cases export (tracing is 1 core)
            res["cli"] = subprocess.Popen(
                ["saved_model_cli", "show", "--all", "--dir", path], stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
        job["cases"].append({
            "id": case.id, "export_dir": path, "inputs": str(root / f"{case.id}-in.npz"),
            "outputs": str(root / f"{case.id}-out.npz"),
            "string_inputs": {"predict_images/image_bytes":
                              [base64.b64encode(b).decode() for b in blobs]}})
    report = run_tf_only_job(root, job)
    for case in job["cases"]:
        res = results[case["id"]]
        res["report"] = report["cases"].get(case["id"])
        res["runner_error"] = report["errors"].get(case["id"])
        if res["report"]:
            res["out"] = dict(np.load(case["outputs"], allow_pickle=False))
    return results, report


def _result(exports, case_id):
    res = exports[0][case_id]
    if "error" in res:
        raise res["error"]
    assert res["runner_error"] is None, res["runner_error"]
    return res


# ----------------------------------------------------------------------------- tests
def test_fresh_process_imported_only_tensorflow(exports):
    results, report = exports
    assert report["imported_blocked_modules"] == []
    assert report["errors"] == {}
    assert set(report["cases"]) == {k for k, r in results.items() if "error" not in r}
    for case_id, case_report in report["cases"].items():
        assert case_report["unregistered_ops"] == [], case_id
        assert not [op for op in case_report["ops"] if ">" in op], case_id  # namespaced custom ops
        assert {"DecodeImage", "ResizeBilinear"} <= set(case_report["ops"])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_signatures_match_keras_in_fresh_tf_only_process(exports, case):
    res = _result(exports, case.id)
    model, out, task = res["model"], res["out"], case.task
    assert set(res["report"]["signatures"]) >= set(sm.SIGNATURES)
    assert res["path"].endswith(os.sep + "1")
    # serving_default: images -> scores
    np.testing.assert_allclose(out["serving_default/scores"],
                               keras_scores(model, res["images"], task), atol=1e-5, rtol=0)
    # predict_images: bytes -> decode_and_resize (as in training) -> model
    decoded = np.stack([decode_and_resize(b, res["size"]).numpy() for b in res["blobs"]])
    ref = keras_scores(model, decoded, task)
    scores = out["predict_images/scores"]
    np.testing.assert_allclose(scores, ref, atol=1e-5, rtol=0)
    if task == "singlelabel":
        np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
    # labels: names >= per-class threshold, best first, "" padded
    thresholds = np.broadcast_to(np.float32(case.export_kwargs.get("thresholds", 0.5)), [N])
    np.testing.assert_array_equal(out["predict_images/labels"],
                                  expected_packed_labels(scores, thresholds))
    np.testing.assert_array_equal(out["predict_images/num_labels"],
                                  (scores >= thresholds).sum(-1))
    clear = np.abs(ref - thresholds) > 1e-5  # away from the boundary Keras decides the same
    np.testing.assert_array_equal((scores >= thresholds)[clear], (ref >= thresholds)[clear])
    # top-k
    k = min(case.export_kwargs.get("top_k", 5), N)
    np.testing.assert_allclose(out["predict_images/top_k_scores"], -np.sort(-ref)[:, :k],
                               atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out["predict_images/top_k_labels"],
                                  np.array(LABELS)[np.argsort(-scores, kind="stable")[:, :k]])
    # metadata
    np.testing.assert_array_equal(out["metadata/labels"], LABELS)
    np.testing.assert_allclose(out["metadata/thresholds"], thresholds)
    assert str(out["metadata/task"]) == task
    np.testing.assert_array_equal(out["metadata/image_size"], res["size"])
    assert int(out["metadata/top_k"]) == k
    assert res["report"]["labels_variable"] == LABELS


def test_assets_hold_labels_and_thresholds(exports):
    res = _result(exports, "multilabel")
    with open(os.path.join(res["path"], "assets", "labels.txt"), encoding="utf-8") as f:
        assert f.read().splitlines() == LABELS
    meta = json.load(open(os.path.join(res["path"], "assets", "keras_mld.json"), encoding="utf-8"))
    assert meta["labels"] == LABELS and meta["task"] == "multilabel"
    np.testing.assert_allclose(meta["thresholds"], [0.3, 0.4, 0.5, 0.6, 0.7], atol=1e-7)


def test_saved_model_cli_lists_signatures(exports):
    res = _result(exports, "multilabel")
    stdout, stderr = res["cli"].communicate(timeout=300)  # saved_model_cli show --all --dir
    assert res["cli"].returncode == 0, stderr[-2000:]
    for text in ("signature_def['serving_default']", "signature_def['predict_images']",
                 "signature_def['metadata']", "inputs['images']", "inputs['image_bytes']",
                 "outputs['scores']", "outputs['labels']", "outputs['top_k_labels']",
                 "outputs['top_k_scores']", "shape: (-1, 32, 32, 3)"):
        assert text in stdout, text


@pytest.fixture(scope="module")
def loaded(exports):
    res = _result(exports, "multilabel")
    return tf.saved_model.load(res["path"]), res


def test_garbage_bytes_raise_invalid_argument(loaded):
    module, res = loaded
    fn = module.signatures["predict_images"]
    cases = [([b"definitely not an image"], "Unknown image file format"),
             ([res["blobs"][0], b"\x89PNG\r\n\x1a\n broken"], "Invalid PNG")]
    for batch, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message) as info:
            fn(image_bytes=tf.constant(batch))
        assert "DecodeImage" in str(info.value)


def test_mixed_png_jpeg_batch_and_empty_batch(loaded):
    module, res = loaded
    png = encode_image(sample_image(64, 48, seed=9), "png")
    jpeg = encode_image(sample_image(20, 70, seed=10), "jpeg")
    out = module.signatures["predict_images"](image_bytes=tf.constant([jpeg, png, jpeg]))
    ref = keras_scores(res["model"], np.stack(
        [decode_and_resize(b, (32, 32)).numpy() for b in (jpeg, png, jpeg)]), "multilabel")
    np.testing.assert_allclose(out["scores"].numpy(), ref, atol=1e-5, rtol=0)
    empty = module.signatures["predict_images"](image_bytes=tf.constant([], tf.string))
    assert empty["scores"].shape == (0, N) and empty["labels"].shape == (0, N)
    assert empty["top_k_labels"].shape == (0, 3)


# ----------------------------------------------------------------------------- atomicity
def test_gat_branch_is_exported_as_a_constant(tmp_path):
    """The image-independent GAT branch is folded: no graph-attention ops in the SavedModel,
    outputs equal to the Keras model, and the model stays trainable (unfrozen) afterwards."""
    model = keras_mld.build(_tiny_backbone(), head="gat", num_classes=N, input_shape=(32, 32, 3),
                            **BUILD_HEAD_KWARGS["gat"])
    images = np.random.default_rng(5).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    expected = 1.0 / (1.0 + np.exp(-np.asarray(model(images, training=False))))
    path = export_saved_model(model, tmp_path / "gat", labels=[f"c{i}" for i in range(N)])
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(open(os.path.join(path, "saved_model.pb"), "rb").read())
    ops = {node.op for mg in proto.meta_graphs for fn in mg.graph_def.library.function
           for node in fn.node_def} | {node.op for mg in proto.meta_graphs
                                       for node in mg.graph_def.node}
    assert not ops & {"LeakyRelu", "Elu", "Softmax"}, ops & {"LeakyRelu", "Elu", "Softmax"}
    loaded = tf.saved_model.load(path)
    got = loaded.signatures["serving_default"](images=tf.constant(images))["scores"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    gat = [layer for layer in model.head.layers
           if isinstance(layer, keras_mld.layers.GraphAttentionReweight)]
    assert gat and not gat[0].frozen
