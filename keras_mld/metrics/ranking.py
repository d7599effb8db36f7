"""Exact average precision and mAP: numpy functions and a streaming Keras metric.

Definition (the official ML-Decoder / ASL ``average_precision``): for one class, sort the
images by score, descending; ``AP = (1/P) * sum over the positives, at rank r, of precision@r``
where ``P`` is the number of positives. Tied scores are handled as scikit-learn does: every
image of a tie group gets the precision measured at the *end* of its group (all tied images
count as retrieved together), so the result does not depend on the order of ties and equals
``sklearn.metrics.average_precision_score`` exactly, ties or not.

Conventions shared by every function of ``keras_mld.metrics``:

* ``y_true`` holds 1 (positive), 0 (negative) or -1 (**ignored**: a partial label, as in the
  losses). An ignored entry is removed from its class before ranking; it is neither a
  positive nor a negative.
* Values are fractions in [0, 1] (the papers print 100x these).
* mAP is the mean AP over classes with **at least one positive**; a class without a positive
  has no defined AP (``NaN`` in the per-class output) and is left out of the mean. The
  official helper instead counts such a class as AP 0 (``0 / (0 + 1e-8)``), which lowers mAP;
  on MS-COCO / VOC every class has positives and the two agree. If no class has a positive,
  mAP is ``NaN``.
"""
import numpy as np
import keras
from keras import ops

__all__ = ["average_precision", "mean_average_precision", "MeanAveragePrecision"]

_BLOCK = 1 << 22  # numpy: entries per block of columns (bounds the temporary memory)


def check_labels_scores(y_true, y_score, where, ndim=2):
    """Validates a (labels, scores) pair; returns ``(int8 labels, float64 scores)``.

    Raises ``ValueError`` naming the argument for: wrong rank, mismatched shapes, labels
    outside {-1, 0, 1}, non-numeric or NaN scores. Shared by the metrics modules.
    """
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score)
    what = "1-D [num_images]" if ndim == 1 else "2-D [num_images, num_classes]"
    for name, arr in (("y_true", y_true), ("y_score", y_score)):
        if arr.ndim != ndim:
            raise ValueError(f"{where}: {name} must be {what}, got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{where}: {name} must be numeric, got dtype {arr.dtype}")
    if y_true.shape != y_score.shape:
        raise ValueError(f"{where}: y_true and y_score must have the same shape, got "
                         f"{y_true.shape} and {y_score.shape}")
    y_score = y_score.astype(np.float64)
    if np.isnan(y_score).any():
        raise ValueError(f"{where}: y_score contains NaN (at {np.argwhere(np.isnan(y_score))[0]})")
    bad = ~np.isin(y_true, (-1, 0, 1))
    if bad.any():
        raise ValueError(f"{where}: y_true must be binary (1 positive, 0 negative, -1 ignored), "
                         f"got values {np.unique(y_true[bad])[:5].tolist()}")
    return y_true.astype(np.int8), y_score


def ap_columns(y, s):
    """AP of every column of ``y`` int8 [n, c] in {-1,0,1}, ``s`` float64 [n, c]; NaN if P=0."""
    n, c = s.shape
    out = np.full(c, np.nan)
    if n == 0 or c == 0:
        return out
    step = max(1, _BLOCK // n)
    for lo in range(0, c, step):
        sb, yb = s[:, lo:lo + step], y[:, lo:lo + step]
        order = np.argsort(-sb, axis=0, kind="stable")
        s_sorted = np.take_along_axis(sb, order, axis=0)
        y_sorted = np.take_along_axis(yb, order, axis=0)
        pos = y_sorted == 1
        tp = np.cumsum(pos, axis=0, dtype=np.float64)
        cnt = np.cumsum(y_sorted != -1, axis=0, dtype=np.float64)
        # Counts at the end of each tie group, carried back over the group: a reverse running
        # minimum of the counts at group ends (the counts are non-decreasing down the ranking).
        is_end = np.ones_like(pos)
        is_end[:-1] = s_sorted[:-1] != s_sorted[1:]
        tp_end = np.minimum.accumulate(np.where(is_end, tp, np.inf)[::-1], axis=0)[::-1]
        cnt_end = np.minimum.accumulate(np.where(is_end, cnt, np.inf)[::-1], axis=0)[::-1]
        prec_sum = np.where(pos, tp_end / np.maximum(cnt_end, 1.0), 0.0).sum(axis=0)
        n_pos = tp[-1]
        has = n_pos > 0
        out[lo:lo + step][has] = prec_sum[has] / n_pos[has]
    return out


def average_precision(y_true_col, score_col):
    """Exact AP of one class: ``(1/P) sum over positives at rank r of precision@r``.

    Args:
        y_true_col: ``[num_images]`` labels in {1, 0, -1}; -1 entries are ignored.
        score_col: ``[num_images]`` scores (probabilities or logits: AP only uses the order).

    Returns:
        float in [0, 1]; ``NaN`` when the class has no positive (AP undefined).
    """
    y, s = check_labels_scores(y_true_col, score_col, "average_precision", ndim=1)
    return float(ap_columns(y[:, None], s[:, None])[0])


def mean_average_precision(y_true, y_score, return_per_class=False):
    """Exact mAP: mean AP over the classes with at least one positive.

    Args:
        y_true: ``[num_images, num_classes]`` in {1, 0, -1}; -1 entries are ignored
            (partial labels).
        y_score: same shape, probabilities or logits (rank-based: either gives the same AP).
        return_per_class: also return the per-class APs, ``[num_classes]`` float64 with ``NaN``
            for classes without positives (those are excluded from the mean).

    Returns:
        ``mAP`` (float in [0, 1], ``NaN`` if no class has a positive), or
        ``(mAP, per_class_ap)`` when ``return_per_class``.

    Examples:
        >>> from keras_mld.metrics import mean_average_precision
        >>> y_true = [[1, 0], [0, 1], [1, 1]]
        >>> y_score = [[0.9, 0.2], [0.3, 0.8], [0.6, 0.1]]
        >>> round(float(mean_average_precision(y_true, y_score)), 4)  # AP 1.0 and 0.8333
        0.9167
    """
    y, s = check_labels_scores(y_true, y_score, "mean_average_precision")
    ap = ap_columns(y, s)
    valid = ~np.isnan(ap)
    m = float(ap[valid].mean()) if valid.any() else float("nan")
    return (m, ap) if return_per_class else m


def _gather_replicas(*tensors):
    """The tensors of all ``tf.distribute`` replicas, concatenated (TensorFlow backend; other
    backends run on one replica here)."""
    if keras.backend.backend() != "tensorflow":
        return tensors
    from keras_mld.metrics.replicas import all_gather_replicas

    return all_gather_replicas(*tensors)


@keras.saving.register_keras_serializable(package="keras_mld")
class MeanAveragePrecision(keras.metrics.Metric):
    """Exact streaming mAP as a Keras metric; ``keras.ops`` only (TF and JAX, jit).

    ``update_state`` copies each batch of scores and labels into preallocated
    ``[capacity, num_classes]`` state variables at the row given by a counter; ``result``
    sorts every class column (``keras.ops``) and computes the same AP as
    :func:`mean_average_precision` (ties handled as in scikit-learn, -1 labels ignored, mean
    over classes with at least one positive). No binning: the value is exact up to float32
    accumulation (agrees with the numpy function to ~1e-6).

    ``y_pred`` may be logits or probabilities: AP is rank-based and a monotone map (sigmoid)
    does not change it. ``sample_weight`` (``[B]`` or ``[B, num_classes]``) acts as a mask:
    entries with weight 0 are ignored, any non-zero weight counts as 1 (AP is not weighted).

    Capacity: the metric holds at most ``capacity`` samples between resets. **If more samples
    arrive, the result is NaN** (until ``reset_state``) rather than a silently wrong value; set
    ``capacity`` to at least the size of the evaluation set. Keras uses the same metric
    object for training and validation, so the *training* value of an epoch larger than
    ``capacity`` is NaN while ``val_mAP`` (reset before evaluation) is exact. ``result()`` is
    also NaN when a non-ignored score is NaN. Memory: ``8 * capacity * num_classes`` bytes
    (scores and labels as float32); ``result()`` sorts that buffer (O(capacity * N log) work,
    skipped while the metric is empty or overflowed) and Keras calls it after every batch,
    so keep ``capacity`` close to the evaluation-set size.

    Replicas (``tf.distribute``, TensorFlow backend): every replica all-gathers its batch
    before storing it (:mod:`keras_mld.metrics.replicas`), so each replica of each worker
    holds the rows of the whole global batch in the single-device order, and the state
    variables are read from the first replica (``aggregation="only_first_replica"``): the
    logged mAP of a replicated run is the mAP of all its samples, not a sum or a mean of
    per-replica values. ``capacity`` counts the samples of all replicas.

    Args:
        num_classes: number of classes ``N`` (int >= 1).
        capacity: maximum number of samples accumulated between resets (int >= 1).
        name: metric name (default ``"mAP"``).
        dtype: dtype of the state and the result (default ``"float32"``).

    Examples:
        >>> import numpy as np
        >>> from keras_mld.metrics import MeanAveragePrecision
        >>> metric = MeanAveragePrecision(num_classes=2)
        >>> metric.update_state(np.array([[1, 0], [0, 1]]), np.array([[0.9, 0.2], [0.3, 0.8]]))
        >>> metric.update_state(np.array([[1, 1]]), np.array([[0.6, 0.1]]))
        >>> round(float(metric.result()), 4)          # the same as mean_average_precision
        0.9167
    """

    def __init__(self, num_classes, capacity=50_000, name="mAP", dtype="float32", **kwargs):
        for arg, val in (("num_classes", num_classes), ("capacity", capacity)):
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
                raise ValueError(f"MeanAveragePrecision: {arg} must be an int >= 1, got {val!r}")
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.num_classes = int(num_classes)
        self.capacity = int(capacity)
        shape = (self.capacity, self.num_classes)
        # every replica holds the same (gathered) rows: read the first, never sum them
        first = "only_first_replica"
        self.scores = self.add_variable(shape=shape, initializer="zeros", dtype=self.dtype,
                                        name="scores", aggregation=first)
        self.labels = self.add_variable(shape=shape, initializer=keras.initializers.Constant(-1.0),
                                        dtype=self.dtype, name="labels", aggregation=first)
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="int32",
                                       name="count", aggregation=first)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.reshape(ops.cast(y_pred, self.dtype), (-1, self.num_classes))
        y_true = ops.reshape(ops.cast(y_true, self.dtype), (-1, self.num_classes))
        if sample_weight is not None:
            w = ops.cast(sample_weight, self.dtype)
            if len(w.shape) == 1:
                w = ops.expand_dims(w, -1)
            y_true = ops.where(ops.broadcast_to(ops.equal(w, 0), ops.shape(y_true)),
                               ops.cast(-1, self.dtype), y_true)
        y_true, y_pred = _gather_replicas(y_true, y_pred)
        batch = ops.cast(ops.shape(y_pred)[0], "int32")
        # A batch larger than the whole buffer is truncated; the counter still records every
        # sample, so the overflow is visible in result() (NaN). On overflow the rows are
        # written at a clamped start (overwriting old rows): the result is NaN anyway.
        y_pred = y_pred[: self.capacity]
        y_true = y_true[: self.capacity]
        kept = ops.cast(ops.shape(y_pred)[0], "int32")
        count = ops.convert_to_tensor(self.count)
        start = ops.minimum(count, self.capacity - kept)
        zero = ops.zeros((), "int32")
        for var, rows in ((self.scores, y_pred), (self.labels, y_true)):
            var.assign(ops.slice_update(ops.convert_to_tensor(var), [start, zero], rows))
        self.count.assign(count + batch)

    def per_class_result(self):
        """AP per class, ``[num_classes]``; NaN for classes without positives (or overflow)."""
        s, y = ops.convert_to_tensor(self.scores), ops.convert_to_tensor(self.labels)
        count = ops.convert_to_tensor(self.count)
        skip = ops.logical_or(ops.equal(count, 0), ops.greater(count, self.capacity))
        # The sort is skipped (one branch runs) when empty or overflowed, e.g. on training
        # epochs larger than the capacity, where Keras still calls result() every step.
        return ops.cond(skip, lambda: ops.full((self.num_classes,), float("nan"), self.dtype),
                        lambda: self._ap_from_buffer(s, y))

    def _ap_from_buffer(self, s, y):
        cap, n = self.capacity, self.num_classes
        order = ops.argsort(-s, axis=0)
        s_sorted = ops.take_along_axis(s, order, axis=0)
        y_sorted = ops.take_along_axis(y, order, axis=0)
        pos = ops.cast(ops.equal(y_sorted, 1), self.dtype)
        tp = ops.cumsum(pos, axis=0)
        cnt = ops.cumsum(ops.cast(ops.greater_equal(y_sorted, 0), self.dtype), axis=0)
        # Tie groups (equal scores) share the counts at the group's end (sklearn semantics):
        # segment-max of the non-decreasing cumulative counts over (group, class) segments.
        new_group = ops.concatenate(
            [ops.ones((1, n), "int32"),
             ops.cast(ops.not_equal(s_sorted[1:], s_sorted[:-1]), "int32")], axis=0)
        seg = ops.cumsum(new_group, axis=0) - 1 + ops.arange(n, dtype="int32")[None, :] * cap
        seg = ops.reshape(seg, (-1,))
        tp_end = ops.take(ops.segment_max(ops.reshape(tp, (-1,)), seg, num_segments=cap * n), seg)
        cnt_end = ops.take(ops.segment_max(ops.reshape(cnt, (-1,)), seg, num_segments=cap * n), seg)
        prec = ops.reshape(tp_end / ops.maximum(cnt_end, 1.0), (cap, n)) * pos
        n_pos = tp[-1]
        nan = ops.cast(float("nan"), self.dtype)
        ap = ops.where(n_pos > 0, ops.sum(prec, axis=0) / ops.maximum(n_pos, 1.0), nan)
        bad = ops.any(ops.logical_and(ops.isnan(s), ops.greater_equal(y, 0)))
        return ops.where(bad, nan, ap)

    def result(self):
        ap = self.per_class_result()
        has = ops.logical_not(ops.isnan(ap))
        total = ops.sum(ops.where(has, ap, 0.0))
        k = ops.sum(ops.cast(has, self.dtype))
        nan = ops.cast(float("nan"), self.dtype)
        overflow = ops.greater(ops.convert_to_tensor(self.count), self.capacity)
        return ops.where(ops.logical_or(k == 0, overflow), nan, total / ops.maximum(k, 1.0))

    def reset_state(self):
        self.scores.assign(ops.zeros(self.scores.shape, self.dtype))
        self.labels.assign(ops.full(self.labels.shape, -1.0, self.dtype))
        self.count.assign(ops.zeros((), "int32"))

    def get_config(self):
        return {"num_classes": self.num_classes, "capacity": self.capacity,
                "name": self.name, "dtype": self.dtype}
