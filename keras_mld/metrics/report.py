"""Multi-label classification report: mAP, CP, CR, CF1, OP, OR, OF1, the metrics
reported by ML-Decoder (Ridnik et al., arXiv:2111.12933) and Prokofiev & Sovrasov
(arXiv:2209.06585) section 4.

Follows the evaluation code of ML-GCN (``util.py``, ``AveragePrecisionMeter.evaluation``),
the reference implementation behind the CP..OF1 columns of the multi-label literature that
the metric-learning paper compares with. Counting per class ``c`` over the non-ignored entries (``y_true != -1``):

* ``Np[c]`` predicted positives, ``Ng[c]`` ground-truth positives, ``Nc[c]`` true positives.
* ``CP = mean_c Nc/Np``, ``CR = mean_c Nc/Ng``, ``CF1 = 2 CP CR / (CP + CR)`` (per class,
  then averaged; CF1 is the harmonic mean of the averages, not the mean of per-class F1s).
* ``OP = sum Nc / sum Np``, ``OR = sum Nc / sum Ng``, ``OF1 = 2 OP OR / (OP + OR)`` (pooled).

0/0 cases (chosen so that numbers are comparable with published tables):

* A class that is **never predicted** has precision 0 (ML-GCN sets ``Np = 1`` when it is 0):
  predicting nothing must not be rewarded, and this is what the published CP values use.
* A class **without positives** has undefined recall. It is left out of both class averages
  (CP and CR average over the same classes, those with at least one positive, like mAP);
  its false positives still count in OP. ML-GCN would produce NaN/inf here; on MS-COCO and
  VOC every class has positives, so the numbers coincide.
* ``OP = 0`` when nothing at all is predicted; ``OR``, ``CP``, ``CR``, ``CF1`` are ``NaN``
  when no class has a positive; an F1 whose precision and recall are both 0 is 0.
"""
import numpy as np

from keras_mld.metrics.ranking import ap_columns, check_labels_scores

__all__ = ["multilabel_report", "predict_labels"]


def predict_labels(y_score, threshold=0.5, top_k=None, top_k_requires_threshold=False,
                   where="predict_labels"):
    """Binary predictions ``[num_images, num_classes]`` (bool) from scores.

    * ``top_k=None``: ``score >= threshold`` (scalar or per-class ``[num_classes]`` array).
    * ``top_k=k``: each image predicts its ``k`` highest scores (ties broken towards the lower
      class index); with ``top_k_requires_threshold=True`` a top-k label also needs
      ``score >= threshold`` (ML-GCN's ``overall_topk``, which uses logits >= 0).
    """
    s = np.asarray(y_score, dtype=np.float64)
    n_cls = s.shape[1]
    thr = np.asarray(threshold, dtype=np.float64)
    if not (thr.ndim == 0 or thr.shape == (n_cls,)):
        raise ValueError(f"{where}: threshold must be a scalar or an array of shape "
                         f"[num_classes] = ({n_cls},), got shape {thr.shape}")
    if np.isnan(thr).any():
        raise ValueError(f"{where}: threshold contains NaN")
    above = s >= thr
    if top_k is None:
        return above
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) \
            or not 1 <= top_k <= n_cls:
        raise ValueError(f"{where}: top_k must be None or an int in [1, num_classes={n_cls}], "
                         f"got {top_k!r}")
    idx = np.argsort(-s, axis=1, kind="stable")[:, :top_k]
    pred = np.zeros(s.shape, dtype=bool)
    np.put_along_axis(pred, idx, True, axis=1)
    return pred & above if top_k_requires_threshold else pred


def _f1(p, r):
    if np.isnan(p) or np.isnan(r):
        return float("nan")
    return 0.0 if p + r == 0 else float(2 * p * r / (p + r))


def multilabel_report(y_true, y_score, threshold=0.5, top_k=None,
                      top_k_requires_threshold=False):
    """mAP and CP, CR, CF1, OP, OR, OF1 of multi-label predictions.

    Args:
        y_true: ``[num_images, num_classes]`` in {1, 0, -1}; -1 entries are ignored (neither
            predictions nor positives).
        y_score: same shape. ``threshold`` is compared with these values: pass probabilities
            with the default 0.5 (or logits with ``threshold=0.0``). mAP is rank-based.
        threshold: scalar or per-class array ``[num_classes]`` (e.g. from
            :func:`keras_mld.metrics.tune_thresholds`); a label is predicted when
            ``score >= threshold``.
        top_k: if set, each image predicts exactly its ``k`` highest-scoring labels and
            ``threshold`` is not used (unless ``top_k_requires_threshold``).
        top_k_requires_threshold: ML-GCN's top-k variant, which keeps a top-k label only if
            its score also passes ``threshold``.

    Returns:
        dict with float values in [0, 1] (or NaN, see the module docstring) under the keys
        ``"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"``.

    Examples:
        >>> from keras_mld.metrics import multilabel_report
        >>> report = multilabel_report([[1, 0], [0, 1]], [[0.9, 0.2], [0.3, 0.8]])
        >>> round(report["mAP"], 4), round(report["CF1"], 4), round(report["OF1"], 4)
        (1.0, 1.0, 1.0)
    """
    y, s = check_labels_scores(y_true, y_score, "multilabel_report")
    pred = predict_labels(s, threshold, top_k, top_k_requires_threshold, "multilabel_report")
    valid = y != -1
    pos = y == 1
    pred = pred & valid
    n_c = (pred & pos).sum(axis=0).astype(np.float64)
    n_p = pred.sum(axis=0).astype(np.float64)
    n_g = pos.sum(axis=0).astype(np.float64)
    has = n_g > 0

    ap = ap_columns(y, s)
    out = {"mAP": float(np.nanmean(ap)) if has.any() else float("nan")}
    if has.any():
        cp = float(np.mean(n_c[has] / np.maximum(n_p[has], 1.0)))
        cr = float(np.mean(n_c[has] / n_g[has]))
        orr = float(n_c.sum() / n_g.sum())
    else:
        cp = cr = orr = float("nan")
    op = float(n_c.sum() / max(n_p.sum(), 1.0))
    out.update(CP=cp, CR=cr, CF1=_f1(cp, cr), OP=op, OR=orr, OF1=_f1(op, orr))
    return out
