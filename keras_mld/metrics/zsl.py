"""Multi-label zero-shot evaluation (ML-Decoder (Ridnik et al., arXiv:2111.12933)
section 2.3.3 and appendix B).

Two settings on the same test images (NUS-WIDE: 925 seen and 81 unseen labels):

* **ZSL**: only the unseen labels are ranked (scores of seen labels are dropped);
* **GZSL**: seen and unseen labels are ranked together.

Metrics in each setting (fractions in [0, 1]; papers print 100x):

* ``mAP``: per-label AP averaged over labels with at least one positive
  (:func:`keras_mld.metrics.mean_average_precision`; every test image is used).
* ``P@k``, ``R@k``, ``F1@k`` for k = 3 and 5, the convention of the NUS-WIDE multi-label ZSL
  benchmark (Fast0Tag, LESA, and the code ML-Decoder compares with: BiAM's ``compute_F1``
  with ``mode_F1='overall'``, ZS-SDL's ``calc_F1``): each image predicts its k
  highest-scoring labels; images without any positive label in the evaluated label set are
  dropped first; then, pooled over images,
  ``P@k = TP / (k * num_images)``, ``R@k = TP / (number of positive labels)``,
  ``F1@k = 2 P R / (P + R)`` (0 when P = R = 0).

With partial labels (-1 = ignored) a top-k slot falling on an ignored entry is neither a
true nor a false positive: ``P@k = TP / (TP + FP)``, which is ``TP / (k * num_images)`` when
nothing is ignored. If ``k`` exceeds the number of labels, every label is predicted.
Ties are broken towards the lower label index.
"""
import numpy as np

from keras_mld.metrics.ranking import ap_columns, check_labels_scores

__all__ = ["precision_recall_f1_at_k", "zsl_report"]


def _prf_at_k(y, s, k, drop_empty):
    if drop_empty:
        keep = (y == 1).any(axis=1)
        y, s = y[keep], s[keep]
    k_eff = min(k, s.shape[1])
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k_eff]
    top = np.take_along_axis(y, idx, axis=1)
    tp = float((top == 1).sum())
    fp = float((top == 0).sum())
    n_pos = float((y == 1).sum())
    p = tp / (tp + fp) if tp + fp > 0 else float("nan")
    r = tp / n_pos if n_pos > 0 else float("nan")
    if np.isnan(p) or np.isnan(r):
        f1 = float("nan")
    else:
        f1 = 0.0 if p + r == 0 else 2 * p * r / (p + r)
    return {"precision": p, "recall": r, "f1": f1, "num_images": int(y.shape[0])}


def _check_k(k, where):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{where}: k must be an int >= 1, got {k!r}")
    return int(k)


def precision_recall_f1_at_k(y_true, y_score, k, drop_empty=True):
    """Overall precision, recall and F1 of the top-k labels of every image (module docstring).

    Args:
        y_true: ``[num_images, num_labels]`` in {1, 0, -1}.
        y_score: same shape (probabilities, logits or similarities: only the order is used).
        k: labels predicted per image (3 and 5 in the ZSL tables).
        drop_empty: drop images with no positive label first (the benchmark convention;
            otherwise each such image adds k false positives).

    Returns:
        dict ``{"precision", "recall", "f1", "num_images"}`` (num_images: images evaluated);
        values are NaN when no image or no positive is left.
    """
    y, s = check_labels_scores(y_true, y_score, "precision_recall_f1_at_k")
    return _prf_at_k(y, s, _check_k(k, "precision_recall_f1_at_k"), drop_empty)


def _unseen_mask(unseen, n_labels):
    u = np.asarray(unseen)
    if u.dtype == bool:
        if u.shape != (n_labels,):
            raise ValueError(f"zsl_report: a boolean unseen mask must have shape "
                             f"[num_labels] = ({n_labels},), got {u.shape}")
        mask = u.copy()
    else:
        if u.ndim != 1 or u.dtype.kind not in "iu":
            raise ValueError("zsl_report: unseen must be a boolean mask [num_labels] or a 1-D "
                             f"array of integer label indices, got dtype {u.dtype}, "
                             f"shape {u.shape}")
        if u.size and (u.min() < 0 or u.max() >= n_labels):
            raise ValueError(f"zsl_report: unseen indices must lie in [0, {n_labels}), got "
                             f"range [{u.min()}, {u.max()}]")
        if len(np.unique(u)) != len(u):
            raise ValueError("zsl_report: unseen indices must not repeat")
        mask = np.zeros(n_labels, dtype=bool)
        mask[u] = True
    if not mask.any():
        raise ValueError("zsl_report: unseen selects no label")
    return mask


def zsl_report(y_true, y_score, unseen, ks=(3, 5), drop_empty=True):
    """ZSL (unseen labels only) and GZSL (all labels) mAP and P/R/F1 at top-k.

    Args:
        y_true: ``[num_images, num_labels]`` in {1, 0, -1}, columns = seen and unseen labels.
        y_score: same shape, the scores of the model for every label.
        unseen: boolean mask ``[num_labels]`` or integer indices of the unseen labels.
        ks: the k of P@k / R@k / F1@k (default 3 and 5, as in the NUS-WIDE tables).
        drop_empty: see :func:`precision_recall_f1_at_k`; applied per setting (ZSL drops the
            images without an unseen positive, GZSL those without any positive).

    Returns:
        ``{"zsl": {...}, "gzsl": {...}}``, each with ``"mAP"`` and ``"P@k"``, ``"R@k"``,
        ``"F1@k"`` for every k in ``ks``, plus ``"num_labels"``.

    Examples:
        >>> from keras_mld.metrics import zsl_report
        >>> y_true = [[1, 0, 1], [0, 1, 0]]
        >>> y_score = [[0.9, 0.1, 0.8], [0.2, 0.7, 0.1]]
        >>> report = zsl_report(y_true, y_score, unseen=[2], ks=(1,))
        >>> sorted(report)[:2]
        ['gzsl', 'zsl']
    """
    y, s = check_labels_scores(y_true, y_score, "zsl_report")
    mask = _unseen_mask(unseen, s.shape[1])
    ks = [_check_k(k, "zsl_report") for k in ks]
    out = {}
    for name, cols in (("zsl", mask), ("gzsl", np.ones_like(mask))):
        yy, ss = y[:, cols], s[:, cols]
        ap = ap_columns(yy, ss)
        res = {"mAP": float(np.nanmean(ap)) if (~np.isnan(ap)).any() else float("nan"),
               "num_labels": int(cols.sum())}
        for k in ks:
            prf = _prf_at_k(yy, ss, k, drop_empty)
            res[f"P@{k}"], res[f"R@{k}"], res[f"F1@{k}"] = (
                prf["precision"], prf["recall"], prf["f1"])
        out[name] = res
    return out
