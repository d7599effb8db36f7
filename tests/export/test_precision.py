"""Reduced-precision exports: ``export_onnx(precision="int8")``,
``export_openvino(precision="bf16" | "int8")`` and ``keras-mld export --precision``.

A tiny ML-Decoder classifier is trained on real handwritten digits (scikit-learn's
``load_digits``, five multi-label attributes per digit), exported in reduced precision,
and every figure the export records (mAP, per-class F1 at the model's thresholds, the
largest score difference against the f32 model) is recomputed independently: the file is
run in a fresh process that cannot import TensorFlow, keras or keras_mld, and the figures
are recomputed from its scores with scikit-learn (``average_precision_score``,
``f1_score``) against Keras' f32 scores.
"""
import json
import os

import keras
import numpy as np
import pytest

import keras_mld
from keras_mld.export import export_onnx, export_openvino
from keras_mld.export.onnx import read_metadata as onnx_meta
from keras_mld.export.openvino import read_metadata as ov_meta
from tests.export.test_onnx_openvino import run_runtimes
from tests.support.tiny import SMALL_HEAD_KWARGS

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("nncf")
sklearn_metrics = pytest.importorskip("sklearn.metrics")

pytestmark = pytest.mark.tf_only
NAMES = ["even", "at_least_5", "has_loop", "straight", "prime"]
ATTRIBUTES = [lambda d: d % 2 == 0, lambda d: d >= 5, lambda d: d in (0, 6, 8, 9),
              lambda d: d in (1, 4, 7), lambda d: d in (2, 3, 5, 7)]


def digits(size=32):
    """Real 8x8 digits upsampled to ``size`` RGB in [0, 255], multi-hot attributes."""
    from sklearn.datasets import load_digits

    data = load_digits()
    grey = np.kron(data.images / 16.0 * 255.0, np.ones((size // 8, size // 8)))
    images = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    labels = np.array([[f(int(d)) for f in ATTRIBUTES] for d in data.target], np.float32)
    return images, labels


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    images, labels = digits()
    model = keras_mld.build("small_convnet", head="mldecoder", class_names=NAMES,
                            input_shape=(32, 32, 3), thresholds=0.4,
                            **SMALL_HEAD_KWARGS["mldecoder"])
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(images[:1200], labels[:1200], batch_size=64, epochs=3, verbose=0)
    return model, (images[1200:1500], labels[1200:1500]), images[:120]


def sklearn_figures(y, scores, reference, thresholds):
    aps = [sklearn_metrics.average_precision_score(y[:, c], scores[:, c])
           for c in range(y.shape[1]) if y[:, c].any()]
    f1 = sklearn_metrics.f1_score(y, scores >= thresholds, average=None, zero_division=0)
    return {"mAP": float(np.mean(aps)), "f1": f1.tolist(),
            "max_abs_score_diff": float(np.max(np.abs(scores - reference)))}


def test_recorded_figures_are_what_the_file_computes_without_tensorflow(trained, tmp_path):
    model, (val_x, val_y), calib = trained
    common = {"validation_data": (val_x, val_y), "max_map_drop": 5.0}
    paths = {
        "onnx-int8": export_onnx(model, tmp_path / "m.onnx", precision="int8",
                                 calibration_data=calib, **common),
        "ov-int8": export_openvino(model, tmp_path / "ov8", precision="int8",
                                   calibration_data=calib, **common),
        "ov-bf16": export_openvino(model, tmp_path / "ovb", precision="bf16", **common),
    }
    jobs = [{"id": key, "runtime": "onnxruntime" if key.startswith("onnx") else "openvino",
             "path": path, "inputs": ["val"]} for key, path in paths.items()]
    report, outputs = run_runtimes(tmp_path, jobs, {"val": val_x})
    assert report["imported_blocked_modules"] == []
    reference = model.scores(model(val_x, training=False))
    f1_f32 = sklearn_metrics.f1_score(val_y, reference >= 0.4, average=None, zero_division=0)
    map_f32 = np.mean([sklearn_metrics.average_precision_score(val_y[:, c], reference[:, c])
                       for c in range(len(NAMES))])
    assert map_f32 > 0.8  # a trained model, not noise
    for key, path in paths.items():
        meta = report["cases"][key]["metadata"]
        onnx_file = key.startswith("onnx")
        got = json.loads(meta["keras_mld.accuracy" if onnx_file else "accuracy"])
        assert meta["keras_mld.precision" if onnx_file else "precision"] == key.split("-")[1]
        scores = outputs[f"{key}/val"]
        expected = sklearn_figures(val_y, scores, reference, np.full(len(NAMES), 0.4))
        np.testing.assert_allclose(got["mAP"], expected["mAP"], atol=1e-6)
        np.testing.assert_allclose(got["mAP_f32"], map_f32, atol=1e-6)
        np.testing.assert_allclose(got["mAP_drop_points"], 100 * (map_f32 - expected["mAP"]),
                                   atol=1e-4)
        np.testing.assert_allclose(got["f1"], expected["f1"], atol=1e-9)
        np.testing.assert_allclose(got["f1_f32"], f1_f32, atol=1e-9)
        np.testing.assert_allclose(got["max_abs_score_diff"], expected["max_abs_score_diff"],
                                   atol=1e-5)
        assert got["num_images"] == 300 and got["data"] == "validation"
        assert got["mAP_drop_points"] <= 5.0
        assert 0 < got["max_abs_score_diff"] < 0.5  # reduced precision: not the f32 model
    # bf16: the compile hint is in the IR, the consumer compiles with it (the child did)
    bf16 = ov_meta(paths["ov-bf16"])
    want = {"INFERENCE_PRECISION_HINT": "bf16", "ENABLE_CPU_PINNING": "NO"}
    assert bf16["compile_config"] == bf16["accuracy"]["compile_config"] == want
    assert bf16["accuracy"]["compiled_inference_precision"] in ("bf16", "f32")
    with open(os.path.join(paths["ov-bf16"], "keras_mld.json"), encoding="utf-8") as f:
        sidecar = json.load(f)
    assert sidecar["precision"] == "bf16" and sidecar["accuracy"] == bf16["accuracy"]
    assert ov_meta(paths["ov-int8"])["accuracy"]["calibration_images"] == 120
    assert onnx_meta(paths["onnx-int8"])["session_options"]["graph_optimization_level"] == \
        "ORT_ENABLE_ALL"


def test_an_export_losing_more_than_max_map_drop_is_refused_and_not_written(trained,
                                                                            tmp_path):
    model, (val_x, val_y), _ = trained
    # calibrated on one black image: every activation range collapses, the model breaks
    black = np.zeros((1, 32, 32, 3), np.float32)
    for export, path in ((export_onnx, tmp_path / "m.onnx"), (export_openvino, tmp_path / "ov")):
        with pytest.raises(ValueError, match=r"int8 export loses [0-9.]+ points of mAP \(.* on "
                                             r"300 validation images; max score difference "
                                             r".*\), more than max_map_drop=1; nothing"):
            export(model, path, precision="int8", calibration_data=black,
                   validation_data=(val_x, val_y))
    assert os.listdir(tmp_path) == []


def test_precision_arguments_are_checked(trained, tmp_path):
    model, (val_x, val_y), calib = trained
    cases = [
        (export_onnx, {"precision": "bf16"}, r"export_onnx: precision must be one of "
                                             r"\('f32', 'int8'\), got 'bf16'"),
        (export_openvino, {"precision": "fp16"}, r"precision must be one of \('f32', 'bf16', "
                                                 r"'int8'\)"),
        (export_onnx, {"precision": "int8"}, "calibration_data must be images for int8"),
        (export_openvino, {"precision": "bf16"}, "validation_data must be labelled images"),
        (export_onnx, {"calibration_data": calib}, "calibration_data must be None for "
                                                   "precision 'f32'"),
        (export_openvino, {"precision": "int8", "calibration_data": calib,
                           "calibration_size": 0}, "calibration_size must be an int >= 1"),
        (export_onnx, {"precision": "int8", "calibration_data": calib, "max_map_drop": -1},
         "max_map_drop must be a finite number >= 0"),
        (export_onnx, {"precision": "int8", "calibration_data": calib},
         "calibration_data has no labels"),
        (export_openvino, {"precision": "bf16", "validation_data": (val_x, val_y[:, :2])},
         r"validation_data labels must be \[n, 5\]"),
        (export_openvino, {"precision": "bf16", "validation_data": "data.txt"},
         "validation_data must be a COCO .json, a .csv or an image folder"),
        (export_onnx, {"precision": "int8", "calibration_data": calib,
                       "float_islands": "attention"}, "float_islands must be None or a "
                                                      "sequence of regular expressions"),
        (export_openvino, {"precision": "int8", "calibration_data": calib,
                           "float_islands": ["(unclosed"]}, "float_islands must be valid "
                                                            "regular expressions"),
    ]
    for export, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            export(model, tmp_path / ("m.onnx" if export is export_onnx else "ov"), **kwargs)
    assert os.listdir(tmp_path) == []


def test_cli_int8_from_a_dataset_path_prints_the_figures(trained, tmp_path, capsys):
    from PIL import Image

    from keras_mld.app.cli import main

    model, (val_x, val_y), _ = trained
    rows = []
    for i in range(64):
        Image.fromarray(val_x[i].astype(np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png," + "|".join(n for n, v in zip(NAMES, val_y[i]) if v))
    (tmp_path / "val.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    model.save(tmp_path / "m.keras")
    out = tmp_path / "out" / "m.onnx"
    assert main(["export", "--model", str(tmp_path / "m.keras"), "--format", "onnx",
                 "--precision", "int8", "--calibration-data", str(tmp_path / "val.csv"),
                 "--calibration-size", "32", "--max-map-drop", "100", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    figures = onnx_meta(out)["accuracy"]
    assert figures["calibration_images"] == 32 and figures["num_images"] == 32
    assert figures["data"] == "calibration"
    assert f"onnxruntime int8: mAP {100 * figures['mAP']:.2f}" in printed
