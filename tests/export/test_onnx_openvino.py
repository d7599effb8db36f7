"""keras_mld.export.export_onnx / export_openvino and ``keras-mld export --format``.

The central check: every head (plus single-label, C-Tran with ``known_labels`` and a
dynamic-size model) exported to ONNX and OpenVINO IR, then run in a fresh process that can
import neither keras, keras_mld nor tensorflow (only onnxruntime / openvino; checked in its
``sys.modules``), gives Keras's probabilities to 1e-4 for batches of 1 and 5 (dynamic
batch), with the class names and thresholds in the file's metadata.
"""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_mld
from keras_mld.export import deploy, export_onnx, export_openvino
from tests.export.test_saved_model import (BUILD_HEAD_KWARGS, LABELS, N, _tiny,
                                           _tiny_known_labels, keras_scores)

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("tf2onnx")

pytestmark = pytest.mark.tf_only
ATOL = 1e-4
BLOCKED = ("keras", "keras_mld", "tensorflow", "tf_keras", "jax", "tf2onnx")

# runs in a fresh interpreter: only numpy + the runtimes (never keras / keras_mld / TF)
CHILD = r"""
import json, sys
BLOCKED = %r
for name in BLOCKED:
    sys.modules[name] = None
import numpy as np
job = json.load(open(sys.argv[1]))
arrays = dict(np.load(job["inputs"]))
outputs, report = {}, {"cases": {}}
for case in job["cases"]:
    info = {}
    if case["runtime"] == "onnxruntime":
        import onnxruntime as ort
        session = ort.InferenceSession(case["path"], providers=["CPUExecutionProvider"])
        info["metadata"] = session.get_modelmeta().custom_metadata_map
        info["inputs"] = [(i.name, i.shape) for i in session.get_inputs()]
        info["outputs"] = [(o.name, o.shape) for o in session.get_outputs()]
        run = lambda x: session.run(["scores"], {"images": x})[0]
    else:
        import openvino as ov
        core = ov.Core()
        model = core.read_model(case["path"] + "/model.xml")
        rt = model.get_rt_info()["keras_mld"]
        info["metadata"] = {k: str(rt[k].astype(str)) for k in rt}
        config = json.loads(info["metadata"]["compile_config"])
        compiled = core.compile_model(model, "CPU", config)
        info["inputs"] = [(i.any_name, str(i.partial_shape)) for i in compiled.inputs]
        info["outputs"] = [(o.any_name, str(o.partial_shape)) for o in compiled.outputs]
        run = lambda x: compiled({"images": x})["scores"]
    for key in case["inputs"]:
        outputs[case["id"] + "/" + key] = run(arrays[key])
    report["cases"][case["id"]] = info
np.savez(job["outputs"], **outputs)
report["imported_blocked_modules"] = sorted(
    m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in BLOCKED)
json.dump(report, open(job["report"], "w"))
""" % (BLOCKED,)


def head_cases():
    return {f"build-{h}": (lambda h=h: keras_mld.build(
        "small_convnet", head=h, num_classes=N, input_shape=(32, 32, 3),
        **BUILD_HEAD_KWARGS.get(h, {})), {}) for h in keras_mld.list_models()["heads"]}


def model_cases():
    cases = head_cases()
    cases.update({
        # the task is the model's own (ImageClassifier config): softmax scores in the file
        "singlelabel": (lambda: keras_mld.build("small_convnet", head="gap", num_classes=N,
                                                input_shape=(32, 32, 3), task="singlelabel"),
                        {"thresholds": 0.2}),
        "known-labels": (_tiny_known_labels, {"thresholds": [0.1, 0.2, 0.3, 0.4, 0.5]}),
        "dynamic-size": (_tiny("multilabel_logits", (None, None, 3)), {"image_size": (24, 40)}),
    })
    return cases


CASES = model_cases()


def run_runtimes(root, cases, inputs):
    """Runs ``cases`` (``{"id", "runtime", "path", "inputs": [keys]}``) in the fresh child."""
    np.savez(root / "inputs.npz", **inputs)
    job = {"cases": cases, "inputs": str(root / "inputs.npz"),
           "outputs": str(root / "outputs.npz"), "report": str(root / "report.json")}
    with open(root / "job.json", "w", encoding="utf-8") as f:
        json.dump(job, f)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root / "job.json")],
                          capture_output=True, text=True, timeout=600, cwd=str(root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(job["report"], encoding="utf-8") as f:
        report = json.load(f)
    return report, dict(np.load(job["outputs"]))


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    results, jobs, inputs = {}, [], {}
    for case_id, (make, kwargs) in CASES.items():
        model = make()
        size = kwargs.get("image_size", (32, 32))
        for batch in (1, 5):
            inputs[f"{case_id}/b{batch}"] = rng.uniform(0, 255, (batch, *size, 3)).astype(
                np.float32)
        task = "singlelabel" if case_id == "singlelabel" else "multilabel"
        results[case_id] = {"model": model, "task": task, "kwargs": kwargs}
        # verify=False: the child below is the check (verify=True is tested on its own)
        onnx_path = export_onnx(model, root / f"{case_id}.onnx", LABELS, verify=False,
                                **kwargs)
        ov_path = export_openvino(model, root / f"{case_id}-ov", LABELS, verify=False, **kwargs)
        for runtime, path in (("onnxruntime", onnx_path), ("openvino", ov_path)):
            jobs.append({"id": f"{runtime}/{case_id}", "runtime": runtime, "path": path,
                         "inputs": [f"{case_id}/b1", f"{case_id}/b5"]})
    report, outputs = run_runtimes(root, jobs, inputs)
    return results, report, outputs, inputs


def test_child_imported_no_keras_keras_mld_or_tensorflow(exports):
    _, report, _, _ = exports
    assert report["imported_blocked_modules"] == []
    assert len(report["cases"]) == 2 * len(CASES)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("case_id", list(CASES))
def test_runtime_scores_equal_keras(exports, runtime, case_id):
    results, report, outputs, inputs = exports
    res = results[case_id]
    info = report["cases"][f"{runtime}/{case_id}"]
    for batch in (1, 5):
        x = inputs[f"{case_id}/b{batch}"]
        got = outputs[f"{runtime}/{case_id}/{case_id}/b{batch}"]
        np.testing.assert_allclose(got, keras_scores(res["model"], x, res["task"]), atol=ATOL,
                                   rtol=0)
    meta = info["metadata"]
    assert json.loads(meta["keras_mld.labels" if runtime == "onnxruntime" else "labels"]) \
        == LABELS
    thresholds = json.loads(meta["keras_mld.thresholds" if runtime == "onnxruntime"
                                 else "thresholds"])
    expected = res["kwargs"].get("thresholds", 0.5)
    np.testing.assert_allclose(thresholds, np.broadcast_to(expected, [N]), atol=1e-7)
    assert (meta["keras_mld.task"] if runtime == "onnxruntime" else meta["task"]) == res["task"]
    (in_name, in_shape), = info["inputs"]
    (out_name, _), = info["outputs"]
    assert (in_name, out_name) == ("images", "scores")
    size = list(res["kwargs"].get("image_size", (32, 32)))
    if runtime == "onnxruntime":
        assert in_shape == ["batch", *size, 3]
    else:
        assert in_shape == f"[?,{size[0]},{size[1]},3]"


def test_verify_on_export_and_metadata_readers(tmp_path):
    from keras_mld.export.onnx import read_metadata as onnx_meta
    from keras_mld.export.openvino import read_metadata as ov_meta

    model = CASES["build-mldecoder"][0]()
    onnx_path = export_onnx(model, tmp_path / "m.onnx", LABELS, thresholds=0.3)
    ov_path = export_openvino(model, tmp_path / "ov", LABELS, thresholds=0.3)
    for meta in (onnx_meta(onnx_path), ov_meta(ov_path)):
        assert meta["labels"] == LABELS
        np.testing.assert_allclose(meta["thresholds"], [0.3] * N, atol=1e-7)
        assert meta["image_size"] == [32, 32] and meta["task"] == "multilabel"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "ov"]
    assert sorted(os.listdir(ov_path)) == ["keras_mld.json", "model.bin", "model.xml"]


def test_scores_that_differ_are_refused():
    expected = np.full((2, 3), 0.5, np.float32)
    deploy.verify_scores("X", expected + 5e-5, expected)
    for got in (expected + 2e-4, expected[:1], np.full_like(expected, np.nan)):
        with pytest.raises(RuntimeError, match="X does not reproduce TensorFlow's scores"):
            deploy.verify_scores("X", got, expected)


class Lgamma(keras.layers.Layer):
    """A layer with an op neither ONNX nor OpenVINO has (for the error test only)."""

    def call(self, x):
        import tensorflow as tf

        return tf.math.lgamma(x)


def test_an_op_a_runtime_cannot_take_is_an_error_naming_it(tmp_path):
    images = keras.Input((8, 8, 3), name="images")
    x = Lgamma(name="odd_layer")(keras.layers.GlobalAveragePooling2D()(images))
    model = keras.Model(images, keras.layers.Dense(2)(x))
    with pytest.raises(ValueError, match=r"no standard op for Lgamma \(in [^)]*odd_layer"):
        export_onnx(model, tmp_path / "m.onnx", ["a", "b"])
    with pytest.raises(ValueError, match=r"op Lgamma in [^)]*odd_layer"):
        export_openvino(model, tmp_path / "ov", ["a", "b"])
    assert os.listdir(tmp_path) == []


def test_bad_arguments_and_no_overwrite(tmp_path):
    model = _tiny("multilabel_logits")()
    with pytest.raises(ValueError, match="export_onnx: labels has 2 names"):
        export_onnx(model, tmp_path / "m.onnx", ["a", "b"])
    with pytest.raises(ValueError, match=r"export_openvino: thresholds: expected values in \[0, 1\]"):
        export_openvino(model, tmp_path / "ov", LABELS, thresholds=[2.0] * N)
    with pytest.raises(ValueError, match="must end with '.onnx'"):
        export_onnx(model, tmp_path / "m.bin", LABELS)
    path = export_onnx(model, tmp_path / "m.onnx", LABELS, verify=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_onnx(model, path, LABELS)
    assert export_onnx(model, path, LABELS, overwrite=True, verify=False) == path
    ov_path = export_openvino(model, tmp_path / "ov", LABELS, verify=False)
    with pytest.raises(FileExistsError):
        export_openvino(model, ov_path, LABELS)
    assert export_openvino(model, ov_path, LABELS, overwrite=True, verify=False) == ov_path
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "ov"]  # nothing half-written aside


def test_cli_export_formats(tmp_path):
    from keras_mld.app.cli import main

    # an ImageClassifier: class names and thresholds come from the model itself
    model = keras_mld.build("small_convnet", head="gap", class_names=LABELS,
                            input_shape=(32, 32, 3), thresholds=0.3)
    model.save(tmp_path / "m.keras")
    model_path = str(tmp_path / "m.keras")
    assert main(["export", "--model", model_path, "--format", "onnx",
                 "--out", str(tmp_path / "m.onnx"), "--thresholds", "0.4"]) == 0
    assert main(["export", "--model", model_path, "--format", "openvino",
                 "--out", str(tmp_path / "ov")]) == 0
    assert main(["export", "--model", model_path, "--out", str(tmp_path / "sm"),
                 "--max-image-pixels", "1000000", "--max-batch-size", "8"]) == 0
    with open(tmp_path / "sm" / "1" / "assets" / "keras_mld.json", encoding="utf-8") as f:
        meta = json.load(f)
    assert (meta["max_image_pixels"], meta["max_batch_size"]) == (1_000_000, 8)
    import onnx

    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props["keras_mld.labels"]) == LABELS
    np.testing.assert_allclose(json.loads(props["keras_mld.thresholds"]), [0.4] * N)
    # the README's Python form: names and thresholds from the model itself
    keras_mld.export.export_onnx(model, tmp_path / "py.onnx")
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "py.onnx")).metadata_props}
    assert json.loads(props["keras_mld.labels"]) == LABELS
    np.testing.assert_allclose(json.loads(props["keras_mld.thresholds"]), [0.3] * N)
    assert os.path.isfile(tmp_path / "m.onnx") and os.path.isfile(tmp_path / "ov" / "model.xml")
    assert main(["export", "--model", model_path, "--format", "onnx", "--version", "2",
                 "--out", str(tmp_path / "x.onnx")]) == 2
