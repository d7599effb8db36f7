"""What a classifier's outputs mean, in one place: the task names, the model's input names,
the checks of class names and thresholds, and logits -> scores.

:class:`keras_mld.ImageClassifier`, :func:`keras_mld.build`, the data loaders and every
exporter use these, so that a name or a rule is written once.
"""
import collections

import numpy as np

TASKS = ("multilabel", "singlelabel")  # sigmoid scores / softmax scores
IMAGES_INPUT = "images"
KNOWN_LABELS_INPUT = "known_labels"   # C-Tran's partial labels
LABEL_VECTORS_INPUT = "label_vectors"  # zero-shot word vectors
DEFAULT_THRESHOLD = 0.5


def check_task(task, argument="task"):
    """``task`` if it is one of :data:`TASKS`, else a ``ValueError`` naming ``argument``."""
    if not isinstance(task, str) or task not in TASKS:
        raise ValueError(f"{argument}: expected one of {TASKS}, got {task!r}")
    return task


def check_class_names(class_names, num_classes=None, argument="class_names"):
    """``class_names`` as a list of unique non-empty strings without newlines (``num_classes``
    of them when given); bytes are decoded as UTF-8. Linear in the number of names."""
    if class_names is None or isinstance(class_names, (str, bytes, dict)) or \
            (isinstance(class_names, np.ndarray) and class_names.ndim != 1):
        raise ValueError(f"{argument}: expected a list of unique non-empty strings, got "
                         f"{class_names!r}"[:500])
    try:
        items = list(class_names)
    except TypeError:
        raise ValueError(f"{argument}: expected a list of unique non-empty strings, got "
                         f"{type(class_names).__name__}") from None
    names = []
    for name in items:
        if isinstance(name, bytes):
            try:
                name = name.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{argument}: names must be UTF-8 text, got {name[:50]!r}") \
                    from None
        if not isinstance(name, str) or not name.strip() or "\n" in name or "\r" in name:
            raise ValueError(f"{argument}: expected non-empty strings without newlines, got "
                             f"{name!r}"[:500])
        names.append(name)
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"{argument}: the model has {num_classes} classes, got "
                         f"{len(names)} names")
    counts = collections.Counter(names)
    if len(counts) != len(names):
        dup = sorted(n for n, c in counts.items() if c > 1)
        raise ValueError(f"{argument}: expected unique names, got duplicates {dup[:20]}"
                         f"{' ...' if len(dup) > 20 else ''}")
    return names


def check_thresholds(thresholds, class_names, argument="thresholds"):
    """Per-class thresholds in [0, 1] as a list of floats, one per class.

    ``thresholds``: None (:data:`DEFAULT_THRESHOLD` for every class), one float (every
    class), a sequence of ``len(class_names)`` floats, or a dict ``{class name: threshold}``
    (the others :data:`DEFAULT_THRESHOLD`). Linear in the number of classes.
    """
    n = len(class_names)
    accepted = f"None, a float, a dict {{class name: float}} or {n} floats (one per class)"
    if thresholds is None:
        return [DEFAULT_THRESHOLD] * n
    if isinstance(thresholds, dict):
        index = {name: i for i, name in enumerate(class_names)}
        unknown = [k for k in thresholds if k not in index]
        if unknown:
            raise ValueError(f"{argument}: unknown class names {unknown[:20]}; accepted: the "
                             f"model's class_names ({n} names, e.g. {list(class_names[:5])})")
        values = [DEFAULT_THRESHOLD] * n
        for k, v in thresholds.items():
            values[index[k]] = v
        thresholds = values
    try:
        t = np.asarray(thresholds, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{argument}: expected {accepted}, got {thresholds!r}"[:500]) from None
    if t.ndim == 0:
        t = np.full([n], float(t))
    if t.shape != (n,):
        raise ValueError(f"{argument}: expected {accepted}, got shape {t.shape}")
    if not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(t > 1):
        bad = t[~(np.isfinite(t) & (t >= 0) & (t <= 1))]
        raise ValueError(f"{argument}: expected values in [0, 1], got {bad[:10].tolist()}")
    return [float(v) for v in t]


def scores_from_logits(logits, task):
    """Scores of ``logits`` ``[B, N]`` (a backend tensor, in float32): ``sigmoid`` for
    ``"multilabel"``, ``softmax`` over the classes for ``"singlelabel"``. Written with
    ``keras.ops``, so the same function runs eagerly, in a Keras model and inside the
    exported TensorFlow graphs."""
    from keras import ops

    logits = ops.cast(logits, "float32")
    if check_task(task) == "singlelabel":
        return ops.softmax(logits, axis=-1)
    return ops.sigmoid(logits)
