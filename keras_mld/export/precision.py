"""Reduced-precision exports (ONNX int8, OpenVINO bf16 and int8): the checked arguments,
the calibration / validation images and the accuracy figures every such export records.

A reduced-precision export is a measured choice: it is calibrated (int8) on images the
user gives, decoded and resized exactly as the served ``predict_images`` signature does
(:func:`keras_mld.data.image.decode_and_resize` through
:func:`keras_mld.data.pipeline.make_dataset`), and then measured on a labelled validation
set (the calibration set when none is given): mAP, per-class F1 at the model's thresholds
and the largest score difference, each against the f32 model (TensorFlow's scores, which
the f32 exports reproduce to 1e-4). The figures (:func:`accuracy_figures`) go into the
file's metadata; an export whose mAP drops by more than ``max_map_drop`` points is refused
with them (:func:`check_drop`), before anything is renamed into place.
"""
import os

import numpy as np

from keras_mld.export.arguments import arg_error
from keras_mld.metrics import mean_average_precision

PRECISIONS = {"export_onnx": ("f32", "int8"), "export_openvino": ("f32", "bf16", "int8")}
DEFAULT_CALIBRATION_SIZE = 300
DEFAULT_MAX_MAP_DROP = 1.0  # points of mAP (0-100 scale)
EVAL_BATCH = 32
# float_islands for the attention score path of the transformer heads (ML-Decoder,
# Query2Label, C-Tran): Q.K^T, the softmax and attention.V, whose activation x activation
# products have no fixed range to calibrate; regular expressions over node names
ATTENTION_ISLANDS = (r"/attention(_\d+)?/MatMul(_1)?($|/)", r"/Softmax$")


def check_arguments(precision, calibration_data, calibration_size, validation_data,
                    max_map_drop, caller):
    """Checks the precision arguments of ``caller``; returns ``precision``."""
    accepted = PRECISIONS[caller]
    if not isinstance(precision, str) or precision not in accepted:
        raise arg_error("precision", f"one of {accepted}", precision, caller)
    if isinstance(calibration_size, bool) or not isinstance(calibration_size, (int, np.integer)) \
            or calibration_size < 1:
        raise arg_error("calibration_size", "an int >= 1", calibration_size, caller)
    if isinstance(max_map_drop, bool) or not isinstance(max_map_drop, (int, float, np.floating,
                                                                       np.integer)) \
            or not np.isfinite(max_map_drop) or max_map_drop < 0:
        raise arg_error("max_map_drop", "a finite number >= 0 (points of mAP)", max_map_drop,
                        caller)
    if precision == "f32":
        for name, value in (("calibration_data", calibration_data),
                            ("validation_data", validation_data)):
            if value is not None:
                raise arg_error(name, f"None for precision 'f32' (it is for {accepted[1:]})",
                                type(value).__name__, caller)
        return precision
    if precision == "int8" and calibration_data is None:
        raise arg_error("calibration_data", "images for int8 calibration: a dataset path (COCO "
                        ".json, .csv or image folder), a tf.data.Dataset or an array "
                        "[n, H, W, 3] (or a tuple (images, labels))", None, caller)
    if validation_data is None and calibration_data is None:
        raise arg_error("validation_data", f"labelled images to measure a {precision!r} export "
                        "on (or calibration_data with labels)", None, caller)
    return precision


def check_float_islands(float_islands, caller):
    """None, or a sequence of regular expressions (strings that compile)."""
    import re

    if float_islands is None:
        return None
    if isinstance(float_islands, (str, bytes)) or not all(
            isinstance(p, str) for p in _iterable(float_islands)):
        raise arg_error("float_islands", "None or a sequence of regular expressions over node "
                        "names", float_islands, caller)
    for pattern in float_islands:
        try:
            re.compile(pattern)
        except re.error as e:
            raise arg_error("float_islands", f"valid regular expressions ({e})", pattern,
                            caller) from None
    return tuple(float_islands)


def _iterable(value):
    try:
        return list(value)
    except TypeError:
        return [None]


def _from_path(path, meta, limit, caller, argument):
    from keras_mld.data.coco import load_coco
    from keras_mld.data.csv import load_csv
    from keras_mld.data.folders import load_image_folder
    from keras_mld.data.pipeline import make_dataset

    labels = meta["labels"]
    if os.path.isdir(path):
        source = load_image_folder(path, class_names=labels)
    elif path.endswith(".json"):
        source = load_coco(path)
    elif path.endswith(".csv"):
        source = load_csv(path, class_names=labels)
    else:
        raise arg_error(argument, "a COCO .json, a .csv or an image folder", path, caller)
    names = list(source.class_names)
    if sorted(names) != sorted(labels):
        raise ValueError(f"{caller}: {argument} {path!r} has classes {names[:10]}..., the "
                         f"model's are {labels[:10]}...")
    # the served decode + resize: keras_mld.data.image.decode_and_resize, as predict_images
    dataset = make_dataset(source, tuple(meta["image_size"]), EVAL_BATCH)
    images, ys = _collect(dataset, limit)
    if source.task == "singlelabel":
        ys = np.eye(len(names), dtype=np.float32)[ys.astype(np.int64)]
    order = [names.index(n) for n in labels]
    return images, ys[:, order]


def _collect(batches, limit):
    xs, ys, n = [], [], 0
    for element in batches:
        x, y = element if isinstance(element, (tuple, list)) else (element, None)
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[None]
            y = None if y is None else np.asarray(y)[None]
        xs.append(x)
        ys.append(None if y is None else np.asarray(y))
        n += len(x)
        if n >= limit:
            break
    if not xs:
        return np.zeros((0, 0, 0, 3), np.float32), None
    images = np.concatenate(xs)[:limit]
    labels = None if any(y is None for y in ys) else np.concatenate(ys)[:limit]
    return images, labels


def load_images(data, meta, limit, caller, argument):
    """``(images float32 [n, H, W, 3] in [0, 255] at the export size, labels float32
    [n, N] or None)``, ``n <= limit``, from a dataset path, a ``tf.data.Dataset`` (of images
    or ``(images, labels)``, batched or not), an array ``[n, H, W, 3]`` or a tuple
    ``(images, labels)``. Images of another size are resized by
    :func:`keras_mld.data.image.resize` (the served resize)."""
    import tensorflow as tf

    from keras_mld.data.image import resize

    if isinstance(data, (str, os.PathLike)):
        images, labels = _from_path(os.fspath(data), meta, limit, caller, argument)
    elif isinstance(data, tf.data.Dataset):
        images, labels = _collect(data.as_numpy_iterator(), limit)
    elif isinstance(data, tuple) and len(data) == 2:
        images, labels = np.asarray(data[0])[:limit], np.asarray(data[1])[:limit]
    elif isinstance(data, np.ndarray) or hasattr(data, "__array__"):
        images, labels = np.asarray(data)[:limit], None
    else:
        raise arg_error(argument, "a dataset path, a tf.data.Dataset, an array [n, H, W, 3] or "
                        "a tuple (images, labels)", type(data).__name__, caller)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(f"{caller}: {argument} must give images [n, H, W, 3] (n >= 1), got "
                         f"shape {images.shape}")
    if tuple(images.shape[1:3]) != tuple(meta["image_size"]):
        images = resize(tf.constant(images), tuple(meta["image_size"])).numpy()
    images = images.astype(np.float32)
    if labels is not None:
        labels = np.asarray(labels, np.float32)
        n = len(meta["labels"])
        if meta["task"] == "singlelabel" and labels.ndim == 1:
            labels = np.eye(n, dtype=np.float32)[labels.astype(np.int64)]
        if labels.shape != (len(images), n):
            raise ValueError(f"{caller}: {argument} labels must be [n, {n}] (multi-hot) to "
                             f"match {len(images)} images, got shape {labels.shape}")
    return images, labels


def batches(images, size=EVAL_BATCH):
    for start in range(0, len(images), size):
        yield images[start:start + size]


def run_batched(run, images):
    """``run`` over ``images`` in batches of :data:`EVAL_BATCH`; float32 ``[n, N]``."""
    return np.concatenate([np.asarray(run(b), np.float32) for b in batches(images)])


def f1_per_class(y_true, scores, thresholds):
    """F1 of ``scores >= thresholds`` per class (0 where a class has no positive and no
    prediction), as ``sklearn.metrics.f1_score(average=None, zero_division=0)``."""
    pred = scores >= np.asarray(thresholds)[None, :]
    truth = y_true > 0.5
    tp = np.sum(pred & truth, axis=0)
    denominator = np.sum(pred, axis=0) + np.sum(truth, axis=0)
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def accuracy_figures(precision, runtime, y_true, reference, scores, thresholds, max_map_drop,
                     data, extra=None):
    """The recorded cost of a reduced-precision export: ``{"precision", "runtime",
    "data", "num_images", "mAP_f32", "mAP", "mAP_drop_points", "max_map_drop_points",
    "f1_f32", "f1", "max_abs_score_diff", ...extra}`` (mAP and F1 in [0, 1]; the drop in
    points, 0-100)."""
    map_f32 = mean_average_precision(y_true, reference)
    map_low = mean_average_precision(y_true, scores)
    return {"precision": precision, "runtime": runtime, "data": data,
            "num_images": int(len(y_true)),
            "mAP_f32": float(map_f32), "mAP": float(map_low),
            "mAP_drop_points": float(100.0 * (map_f32 - map_low)),
            "max_map_drop_points": float(max_map_drop),
            "f1_f32": [float(v) for v in f1_per_class(y_true, reference, thresholds)],
            "f1": [float(v) for v in f1_per_class(y_true, scores, thresholds)],
            "max_abs_score_diff": float(np.max(np.abs(scores - reference))),
            **(extra or {})}


def check_drop(figures, caller):
    """Refuses (``ValueError`` with the figures) an export whose mAP drop exceeds the bound."""
    if not figures["mAP_drop_points"] <= figures["max_map_drop_points"]:
        raise ValueError(
            f"{caller}: the {figures['precision']} export loses {figures['mAP_drop_points']:.2f}"
            f" points of mAP ({100 * figures['mAP_f32']:.2f} -> {100 * figures['mAP']:.2f} on "
            f"{figures['num_images']} {figures['data']} images; max score difference "
            f"{figures['max_abs_score_diff']:.2e}), more than max_map_drop="
            f"{figures['max_map_drop_points']:g}; nothing was written")


def summary(figures):
    """One line for the CLI."""
    f1_drop = max(a - b for a, b in zip(figures["f1_f32"], figures["f1"]))
    return (f"{figures['runtime']} {figures['precision']}: mAP {100 * figures['mAP']:.2f} "
            f"(f32 {100 * figures['mAP_f32']:.2f}, drop {figures['mAP_drop_points']:.2f} "
            f"points, bound {figures['max_map_drop_points']:g}) on {figures['num_images']} "
            f"{figures['data']} images; largest per-class F1 drop {f1_drop:.3f}; max score "
            f"difference {figures['max_abs_score_diff']:.2e}")


def measurement_set(meta, calibration_data, calibration_size, validation_data, caller):
    """``(calibration images or None, validation images, validation labels, "validation" |
    "calibration")``."""
    calib = None
    if calibration_data is not None:
        calib = load_images(calibration_data, meta, calibration_size, caller,
                            "calibration_data")
    if validation_data is not None:
        images, labels = load_images(validation_data, meta, 10 ** 9, caller, "validation_data")
        which = "validation"
    else:
        images, labels = calib
        which = "calibration"
    if labels is None:
        raise ValueError(f"{caller}: {which}_data has no labels; the cost of a reduced-precision "
                         "export is measured on labelled images (pass a dataset path, a "
                         "tf.data.Dataset of (images, labels) or a tuple (images, labels))")
    return (None if calib is None else calib[0]), images, labels, which
