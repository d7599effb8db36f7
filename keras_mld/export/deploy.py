"""What the non-TensorFlow exports (ONNX, OpenVINO) share with the SavedModel.

The contract of every export: input ``images`` float32 ``[B, H, W, 3]`` RGB in [0, 255]
(``B`` dynamic), output ``scores`` float32 ``[B, N]`` (sigmoid, or softmax for single-label
models), class names, thresholds, task and image size in the file's metadata.
:func:`deploy_metadata` checks and collects that metadata (the one place to switch to
metadata stored on the model), :func:`scores_function` is the traced graph (the SavedModel's
``serving_default``: the Keras model's call, C-Tran's ``known_labels`` fed "all unknown",
image-independent graph branches folded into constants), and :func:`verify_scores`
refuses an export whose runtime does not reproduce TensorFlow's scores.
"""
import contextlib
import json
import os

import keras
import numpy as np
import tensorflow as tf

from keras_mld.atomic import atomic_path
from keras_mld.export.arguments import (check_image_size, check_labels, check_thresholds,
                                        count_classes, detect_task, images_input)
from keras_mld.export.saved_model import logits_function
from keras_mld.metadata import scores_from_logits
from keras_mld.models.graph.freeze import freeze_graph_branches

FORMAT = "keras_mld.deploy/1"
INPUT_NAME = "images"
OUTPUT_NAME = "scores"
VERIFY_ATOL = 1e-4


def deploy_metadata(model, labels=None, thresholds=None, task=None, image_size=None,
                    caller="export"):
    """Checked metadata ``{"format", "task", "labels", "thresholds", "image_size",
    "input", "output", "input_range"}`` of ``model`` for a deployment file; arguments as for
    :func:`keras_mld.export.export_saved_model`."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"{caller} needs the TensorFlow backend (KERAS_BACKEND=tensorflow), "
                           f"got {keras.backend.backend()!r}")
    if not isinstance(model, keras.Model):
        raise ValueError(f"{caller}: model must be a keras.Model, got {type(model).__name__}")
    try:
        num_classes = count_classes(model)
        task = detect_task(model, task)
        labels = check_labels(labels, num_classes, model)
        thresholds = check_thresholds(thresholds, num_classes, model, labels)
        image_size = check_image_size(model, images_input(model), image_size)
    except ValueError as e:
        raise ValueError(str(e).replace("export_saved_model", caller)) from None
    return {"format": FORMAT, "task": task, "labels": labels,
            "thresholds": [float(t) for t in thresholds], "image_size": list(image_size),
            "input": INPUT_NAME, "output": OUTPUT_NAME, "input_range": [0.0, 255.0]}


@contextlib.contextmanager
def frozen(model):
    """Image-independent graph branches (GAT re-weighting, ML-GCN) as constants meanwhile."""
    layers = freeze_graph_branches(model)
    try:
        yield model
    finally:
        for layer in layers:
            layer.unfreeze()


def scores_function(model, meta):
    """``tf.function`` ``images [None, H, W, 3] float32 -> scores [None, N] float32``."""
    height, width = meta["image_size"]
    logits_fn = logits_function(model, images_input(model), len(meta["labels"]))
    spec = tf.TensorSpec([None, height, width, 3], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec], autograph=False)
    def scores(images):
        return tf.identity(scores_from_logits(logits_fn(images), meta["task"]), name=OUTPUT_NAME)

    return scores


def sample_images(meta, batch=3, seed=0):
    """A deterministic batch of pixels in [0, 255] at the export size (for verification)."""
    height, width = meta["image_size"]
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 255.0, (batch, height, width, 3)).astype(np.float32)


def verify_scores(runtime, got, expected, atol=VERIFY_ATOL):
    """Raises ``RuntimeError`` when ``runtime``'s scores differ from TensorFlow's."""
    got = np.asarray(got)
    if got.shape != expected.shape or not np.all(np.isfinite(got)) or \
            np.max(np.abs(got - expected)) > atol:
        err = (np.max(np.abs(got - expected)) if got.shape == expected.shape
               else f"shape {got.shape}")
        raise RuntimeError(f"{runtime} does not reproduce TensorFlow's scores (max abs "
                           f"difference {err} > {atol}); the export was not written")


def check_destination(path, overwrite, caller):
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{caller}: {path!r} exists; pass overwrite=True to replace it")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    return path


def publish(path, overwrite, write, directory, caller):
    """``write(tmp)`` fills a hidden temporary file or directory beside ``path`` that is then
    renamed to ``path`` (:func:`keras_mld.atomic.atomic_path`; an existing one is replaced
    only when ``overwrite``). On any error nothing is left behind."""
    with atomic_path(path, overwrite=overwrite, directory=directory, caller=caller) as tmp:
        write(tmp)
    return path


def metadata_strings(meta):
    """Flat ``{key: str}`` (lists as JSON) for runtimes whose metadata holds strings."""
    return {f"keras_mld.{k}": v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            for k, v in meta.items()}
