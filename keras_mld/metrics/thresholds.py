"""Per-class decision thresholds maximising per-class F1.

Prokofiev & Sovrasov (arXiv:2209.06585), section 4.5: a grid search per class on a calibration
split (not the test split) gains +0.6 to +3.6 OF1 over a global 0.5.
"""
import numpy as np

from keras_mld.metrics.ranking import check_labels_scores

__all__ = ["tune_thresholds"]


def _best_on_grid(scores, labels, grid):
    """F1 of ``scores >= t`` for every ``t`` in ascending ``grid``; returns (index, f1)."""
    order = np.argsort(scores, kind="stable")
    s_sorted = scores[order]
    pos_before = np.concatenate([[0], np.cumsum(labels[order] == 1)])  # positives below index
    n, n_pos = len(scores), pos_before[-1]
    first = np.searchsorted(s_sorted, grid, side="left")  # first index with score >= t
    tp = n_pos - pos_before[first]
    n_pred = n - first
    f1 = 2.0 * tp / (n_pred + n_pos)  # = 2TP / (2TP + FP + FN); n_pos > 0 here
    best = np.flatnonzero(f1 == f1.max())[-1]  # ties: the largest threshold (fewest predictions)
    return best, f1[best]


def tune_thresholds(y_true, y_score, grid=None, default=0.5, return_f1=False):
    """Per-class thresholds maximising each class's F1 on a calibration split (grid search).

    A label is predicted when ``score >= threshold`` (the convention of
    :func:`keras_mld.metrics.multilabel_report`).

    Args:
        y_true: ``[num_images, num_classes]`` in {1, 0, -1}; -1 entries are ignored.
        y_score: same shape: probabilities or logits (the thresholds are in the same units).
        grid: 1-D array of candidate thresholds shared by all classes. ``None`` (default):
            every distinct calibration score of the class is a candidate, which is an exact
            search over all achievable decisions; the returned value is then moved to the
            midpoint between the chosen score and the next lower distinct score, so that the
            calibration decisions are unchanged but unseen scores get a margin.
        default: threshold given to a class with no positive in the calibration split (its
            F1 is 0 whatever the threshold): 0.5 suits probabilities; pass 0.0 for logits.
        return_f1: also return the calibration F1 reached per class (NaN where ``default``).

    Returns:
        ``thresholds`` float64 ``[num_classes]``, or ``(thresholds, f1)`` if ``return_f1``.
        Among thresholds with equal F1 the largest is kept (fewest false positives).

    Examples:
        >>> from keras_mld.metrics import tune_thresholds
        >>> thresholds = tune_thresholds([[1], [1], [0], [0]], [[0.9], [0.4], [0.3], [0.1]])
        >>> bool(0.3 < float(thresholds[0]) <= 0.4)   # separates 0.4 (positive) from 0.3
        True
    """
    y, s = check_labels_scores(y_true, y_score, "tune_thresholds")
    if grid is not None:
        grid = np.asarray(grid, dtype=np.float64)
        if grid.ndim != 1 or grid.size == 0 or np.isnan(grid).any():
            raise ValueError("tune_thresholds: grid must be a non-empty 1-D array of numbers "
                             f"without NaN, got shape {grid.shape}")
        grid = np.unique(grid)
    n_cls = s.shape[1]
    thresholds = np.full(n_cls, float(default))
    f1s = np.full(n_cls, np.nan)
    for c in range(n_cls):
        keep = y[:, c] != -1
        labels, scores = y[keep, c], s[keep, c]
        if not (labels == 1).any():
            continue
        if grid is not None:
            i, f1s[c] = _best_on_grid(scores, labels, grid)
            thresholds[c] = grid[i]
            continue
        cand = np.unique(scores)
        i, f1s[c] = _best_on_grid(scores, labels, cand)
        t = cand[i]
        if i > 0:
            mid = cand[i - 1] + (cand[i] - cand[i - 1]) / 2
            if cand[i - 1] < mid <= cand[i]:  # guards against rounding and infinities
                t = mid
        thresholds[c] = t
    return (thresholds, f1s) if return_f1 else thresholds
