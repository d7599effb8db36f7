"""The checked arguments of every exporter (SavedModel, zero-shot, ONNX, OpenVINO): the
model's images input and class count, the task, class names, thresholds, image size,
request limits and the SavedModel version. Defaults come from a
:class:`keras_mld.ImageClassifier`'s own metadata; the rules are :mod:`keras_mld.metadata`'s.

Every error is a ``ValueError`` (``FileExistsError`` for an existing version) naming the
argument and what it accepts; messages name ``export_saved_model``, and the other exporters
put their own name in its place."""
import os

import numpy as np

from keras_mld.data.image import check_limit as _image_check_limit
from keras_mld.metadata import (IMAGES_INPUT, KNOWN_LABELS_INPUT, TASKS, check_class_names,
                                check_thresholds as _check_thresholds)

CALLER = "export_saved_model"


def arg_error(argument, accepted, got, caller=CALLER):
    """``ValueError("<caller>: <argument> must be <accepted>, got <got>")``."""
    return ValueError(f"{caller}: {argument} must be {accepted}, got {got!r}"[:2000])


def images_input(model):
    """The model's images input (named ``images``, else its one 4-D input)."""
    inputs = list(model.inputs)
    named = [t for t in inputs if t.name == IMAGES_INPUT]
    candidates = named or [t for t in inputs if len(t.shape) == 4]
    if not candidates:
        raise ValueError(f"{CALLER}: the model needs an input named 'images' of shape "
                         f"[B, H, W, 3]; its inputs are {[t.name for t in inputs]}")
    others = [t for t in inputs if t is not candidates[0]]
    unknown = [t.name for t in others if t.name != KNOWN_LABELS_INPUT]
    if unknown:
        raise ValueError(f"{CALLER}: only the inputs 'images' and (optional) 'known_labels' "
                         f"can be exported, the model also has {unknown}")
    return candidates[0]


def count_classes(model):
    """N: an ImageClassifier's current class count, else the width of the one logits output."""
    if isinstance(getattr(model, "num_classes", None), int):
        return model.num_classes  # an ImageClassifier: also after set_labels changed M
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2 or \
            model.outputs[0].shape[-1] is None:
        raise ValueError(f"{CALLER}: the model must have one output, logits of shape [B, N]; "
                         f"got {[tuple(o.shape) for o in model.outputs]}")
    return int(model.outputs[0].shape[-1])


def detect_task(model, task):
    """``task``, else the model's own (:class:`keras_mld.ImageClassifier`), else multilabel."""
    if task is None:
        task = getattr(model, "task", None) or "multilabel"
    if task not in TASKS:
        raise arg_error("task", f"one of {TASKS} or None", task)
    return task


def check_labels(labels, n, model=None):
    """``labels`` (default: the model's class names) as N unique names."""
    if labels is None:
        labels = getattr(model, "class_names", None)
        if labels is None:
            raise arg_error("labels", f"a sequence of {n} class names (required: the model is "
                            "not a keras_mld.ImageClassifier, which carries its class names)",
                            labels)
    try:
        names = check_class_names(labels, argument="labels")
    except ValueError as err:
        raise ValueError(f"{CALLER}: {err}") from None
    if len(names) != n:
        raise ValueError(f"{CALLER}: labels has {len(names)} names but the model outputs {n} "
                         f"classes")
    return names


def check_limit(value, name):
    """A request limit (``max_image_pixels``, ``max_batch_size``): None or an int >= 1."""
    try:
        return _image_check_limit(value, name)
    except ValueError as e:
        raise ValueError(f"export: {e}") from None


def check_thresholds(thresholds, n, model=None, labels=None):
    """Per-class thresholds (default: the model's, else 0.5) as float32 ``[N]``; a dict takes
    class names (``labels``)."""
    if thresholds is None:
        thresholds = getattr(model, "thresholds", None)
    names = list(labels) if labels is not None else [str(i) for i in range(n)]
    if len(names) != n:
        names = [str(i) for i in range(n)]
    try:
        return np.asarray(_check_thresholds(thresholds, names), np.float32)
    except ValueError as err:
        raise ValueError(f"{CALLER}: {err}") from None


def check_image_size(model, images, image_size):
    """``(H, W)`` the export resizes to: ``image_size``, else the model's."""
    static = tuple(images.shape[1:3])
    if images.shape[-1] not in (None, 3):
        raise ValueError(f"{CALLER}: the 'images' input must have 3 (RGB) channels, got shape "
                         f"{tuple(images.shape)}")
    if image_size is None and getattr(model, "image_size", None) is not None:
        image_size = model.image_size  # an ImageClassifier resizes to it inside
    if image_size is None:
        if None in static:
            raise ValueError(f"{CALLER}: the model input has no static height/width (shape "
                             f"{tuple(images.shape)}); pass image_size=(H, W)")
        return tuple(int(s) for s in static)
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    try:
        size = tuple(image_size)
    except TypeError:
        raise arg_error("image_size", "None, a positive int or (H, W) positive ints",
                        image_size) from None
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                 and s > 0 for s in size):
        raise arg_error("image_size", "None, a positive int or (H, W) positive ints", image_size)
    size = tuple(int(s) for s in size)
    if any(s is not None and s != z for s, z in zip(static, size)):
        raise ValueError(f"{CALLER}: image_size {size} differs from the model's input size "
                         f"{static}")
    return size


def numeric_versions(base_dir):
    """The numeric version folders of ``base_dir``, sorted."""
    if not os.path.isdir(base_dir):
        return []
    return sorted(int(d) for d in os.listdir(base_dir)
                  if d.isascii() and d.isdigit() and os.path.isdir(os.path.join(base_dir, d)))


def check_version(version, base_dir, overwrite):
    """The version to write: ``version``, or the next free one when None."""
    if version is None:
        existing = numeric_versions(base_dir)
        return (existing[-1] + 1) if existing else 1
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise arg_error("version", "a positive int or None", version)
    version = int(version)
    if os.path.exists(os.path.join(base_dir, str(version))) and not overwrite:
        raise FileExistsError(
            f"{CALLER}: version {version} already exists in {base_dir!r}; pass "
            "overwrite=True to replace it or version=None for the next free version")
    return version
