"""The checked arguments of every exporter (SavedModel, zero-shot, ONNX, OpenVINO): the
model's images input and class count, the task, class names, thresholds, image size and
request limits. Defaults come from a :class:`keras_mld.ImageClassifier`'s own metadata."""
import numpy as np

from keras_mld.data.image import _check_limit

TASKS = ("multilabel", "singlelabel")
IMAGES_INPUT = "images"
KNOWN_LABELS_INPUT = "known_labels"


def _err(argument, accepted, got):
    return ValueError(f"export_saved_model: {argument} must be {accepted}, got {got!r}")


# ----------------------------------------------------------------------------- validation
def _images_input(model):
    inputs = list(model.inputs)
    named = [t for t in inputs if t.name == IMAGES_INPUT]
    candidates = named or [t for t in inputs if len(t.shape) == 4]
    if not candidates:
        raise ValueError("export_saved_model: the model needs an input named 'images' of "
                         f"shape [B, H, W, 3]; its inputs are {[t.name for t in inputs]}")
    others = [t for t in inputs if t is not candidates[0]]
    unknown = [t.name for t in others if t.name != KNOWN_LABELS_INPUT]
    if unknown:
        raise ValueError("export_saved_model: only the inputs 'images' and (optional) "
                         f"'known_labels' can be exported, the model also has {unknown}")
    return candidates[0]


def _num_classes(model):
    if isinstance(getattr(model, "num_classes", None), int):
        return model.num_classes  # an ImageClassifier: also after set_labels changed M
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2 or \
            model.outputs[0].shape[-1] is None:
        raise ValueError("export_saved_model: the model must have one output, logits of "
                         f"shape [B, N]; got {[tuple(o.shape) for o in model.outputs]}")
    return int(model.outputs[0].shape[-1])


def _detect_task(model, task):
    """``task``, else the model's own (:class:`keras_mld.ImageClassifier`), else multilabel."""
    if task is None:
        task = getattr(model, "task", None) or "multilabel"
    if task not in TASKS:
        raise _err("task", f"one of {TASKS} or None", task)
    return task


def _check_labels(labels, n, model=None):
    if labels is None:
        labels = getattr(model, "class_names", None)
        if labels is None:
            raise _err("labels", f"a sequence of {n} class names (required: the model is not a "
                       "keras_mld.ImageClassifier, which carries its class names)", labels)
    if isinstance(labels, (str, bytes)):
        raise _err("labels", f"a sequence of {n} class names", labels)
    out = []
    for name in list(labels):
        if isinstance(name, bytes):
            name = name.decode("utf-8")
        if not isinstance(name, str) or not name or "\n" in name or "\r" in name:
            raise _err("labels", "non-empty strings without newlines", name)
        out.append(str(name))
    if len(out) != n:
        raise ValueError(f"export_saved_model: labels has {len(out)} names but the model "
                         f"outputs {n} classes")
    if len(set(out)) != n:
        dup = sorted({x for x in out if out.count(x) > 1})
        raise _err("labels", "unique class names", f"duplicates {dup}")
    return out


def _limit(value, name):
    try:
        return _check_limit(value, name)
    except ValueError as e:
        raise ValueError(f"export: {e}") from None


def _check_thresholds(thresholds, n, model=None, labels=None):
    if thresholds is None:
        thresholds = getattr(model, "thresholds", None)
    if thresholds is None:
        return np.full([n], 0.5, np.float32)
    if isinstance(thresholds, dict):  # {class name: threshold}, as ImageClassifier takes them
        from keras_mld.models.image_classifier import check_thresholds

        try:
            thresholds = check_thresholds(thresholds, list(labels or []))
        except ValueError as e:
            raise _err("thresholds", "a dict of known class names to floats in [0, 1]",
                       str(e)) from None
    try:
        t = np.asarray(thresholds, dtype=np.float64)
    except (TypeError, ValueError):
        raise _err("thresholds", f"None, a float, {n} floats or a dict {{class name: float}}",
                   thresholds) from None
    if t.ndim == 0:
        t = np.full([n], float(t))
    if t.shape != (n,):
        raise _err("thresholds", f"None, a float or {n} floats (one per class)",
                   f"shape {t.shape}")
    if not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(t > 1):
        raise _err("thresholds", "values in [0, 1]", t.tolist())
    return t.astype(np.float32)


def _check_image_size(model, images_input, image_size):
    static = tuple(images_input.shape[1:3])
    if images_input.shape[-1] not in (None, 3):
        raise ValueError("export_saved_model: the 'images' input must have 3 (RGB) channels, "
                         f"got shape {tuple(images_input.shape)}")
    if image_size is None and getattr(model, "image_size", None) is not None:
        image_size = model.image_size  # an ImageClassifier resizes to it inside
    if image_size is None:
        if None in static:
            raise ValueError("export_saved_model: the model input has no static height/width "
                             f"(shape {tuple(images_input.shape)}); pass image_size=(H, W)")
        return tuple(int(s) for s in static)
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    try:
        size = tuple(image_size)
    except TypeError:
        raise _err("image_size", "None, a positive int or (H, W) positive ints",
                   image_size) from None
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                 and s > 0 for s in size):
        raise _err("image_size", "None, a positive int or (H, W) positive ints", image_size)
    size = tuple(int(s) for s in size)
    if any(s is not None and s != z for s, z in zip(static, size)):
        raise ValueError(f"export_saved_model: image_size {size} differs from the model's "
                         f"input size {static}")
    return size
