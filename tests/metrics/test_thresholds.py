"""tune_thresholds: per-class F1 grid search, compared with a brute force written here."""
import numpy as np
import pytest
from sklearn.metrics import f1_score

from keras_mld.metrics import multilabel_report, tune_thresholds


def constructed(rng, n=200):
    """Three classes whose best thresholds are far from 0.5 (overconfident / timid scores)."""
    y = (rng.random((n, 3)) < 0.3).astype(int)
    noise = rng.normal(0, 0.08, size=(n, 3))
    centers = np.array([[0.10, 0.35], [0.60, 0.90], [0.40, 0.55]])  # (negatives, positives)
    s = np.where(y == 1, centers[:, 1], centers[:, 0]) + noise
    return y, s


def f1_all(labels, scores, grid):
    """F1 of ``scores >= t`` for every t of grid, by direct counting: [len(grid)]."""
    pred = scores[None, :] >= np.asarray(grid)[:, None]
    tp = (pred & (labels[None, :] == 1)).sum(1)
    return 2 * tp / (pred.sum(1) + (labels == 1).sum())


def brute_force(y, s, grid):
    """Per class: the grid point with the highest F1 (largest one on ties)."""
    best = []
    for k in range(y.shape[1]):
        f1 = f1_all(y[:, k], s[:, k], grid)
        best.append(grid[np.flatnonzero(f1 == f1.max())[-1]])
        assert f1.max() == pytest.approx(f1_score(y[:, k], s[:, k] >= best[-1]), abs=1e-12)
    return np.array(best)


def test_tuning_improves_f1_and_equals_best_grid_point():
    rng = np.random.default_rng(0)
    y, s = constructed(rng)
    grid = np.linspace(0.0, 1.0, 101)
    thr = tune_thresholds(y, s, grid=grid)
    np.testing.assert_array_equal(thr, brute_force(y, s, grid))
    before = multilabel_report(y, s, threshold=0.5)
    after = multilabel_report(y, s, threshold=thr)
    assert after["CF1"] > before["CF1"] + 0.2
    assert after["OF1"] > before["OF1"] + 0.2
    # and it generalises to a fresh split drawn the same way
    y2, s2 = constructed(np.random.default_rng(1))
    assert multilabel_report(y2, s2, threshold=thr)["OF1"] > \
        multilabel_report(y2, s2, threshold=0.5)["OF1"] + 0.2


def test_default_grid_is_exact_search_over_scores():
    rng = np.random.default_rng(2)
    y, s = constructed(rng, n=80)
    thr, f1 = tune_thresholds(y, s, return_f1=True)
    for k in range(3):
        cands = np.unique(s[:, k])
        best = f1_all(y[:, k], s[:, k], cands).max()
        got = f1_score(y[:, k], s[:, k] >= thr[k])
        assert got == pytest.approx(best, abs=1e-12)
        assert f1[k] == pytest.approx(best, abs=1e-12)
        # the threshold sits strictly between two calibration scores (a margin), or at the min
        assert thr[k] not in cands or thr[k] == cands[0]


def test_no_positive_class_and_ignored_entries():
    y = np.array([[1, 0], [0, 0], [1, 0], [-1, 0]])
    s = np.array([[0.8, 0.9], [0.3, 0.1], [0.6, 0.2], [0.99, 0.3]])
    thr, f1 = tune_thresholds(y, s, default=0.7, return_f1=True)
    # class 0 without the ignored 0.99: positives 0.8, 0.6 above the negative 0.3 -> F1 1,
    # threshold midway between 0.3 and 0.6
    assert thr[0] == pytest.approx(0.45)
    assert f1[0] == 1.0
    assert thr[1] == 0.7 and np.isnan(f1[1])  # no positive: the default


def test_grid_validation():
    with pytest.raises(ValueError, match="grid must be a non-empty 1-D array"):
        tune_thresholds(np.ones((2, 2)), np.ones((2, 2)), grid=np.ones((2, 2)))
    with pytest.raises(ValueError, match="tune_thresholds: y_true and y_score must have"):
        tune_thresholds(np.ones((2, 2)), np.ones((2, 3)))
