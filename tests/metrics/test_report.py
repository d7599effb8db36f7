"""multilabel_report: hand-computed 3x4 example, per-class thresholds, top-k, 0/0 cases."""
import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score

from keras_mld.metrics import multilabel_report

# 3 images x 4 classes; every class has a positive.
Y = np.array([[1, 0, 1, 0],
              [0, 1, 1, 1],
              [1, 1, 0, 0]])
S = np.array([[0.9, 0.6, 0.4, 0.1],
              [0.2, 0.7, 0.8, 0.3],
              [0.6, 0.3, 0.55, 0.05]])
# mAP by hand. c0 ranks (+,+,-): 1. c1 ranks 0.7(+) 0.6(-) 0.3(+): (1 + 2/3)/2 = 5/6.
# c2 ranks 0.8(+) 0.55(-) 0.4(+): 5/6. c3: its only positive is ranked first: 1.
MAP = (1 + 5 / 6 + 5 / 6 + 1) / 4


def check(rep, expected):
    assert set(rep) == {"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"}
    for key, val in expected.items():
        assert rep[key] == pytest.approx(val, abs=1e-12), key


def test_threshold_half_by_hand():
    # predictions (score >= 0.5): img0 {c0, c1}, img1 {c1, c2}, img2 {c0, c2}
    # c0: TP 2 / pred 2 / pos 2 -> P 1, R 1;  c1: 1/2/2 -> P .5, R .5;  c2: 1/2/2 -> .5, .5
    # c3: never predicted, 1 positive -> P 0 (0/0 := 0), R 0
    check(multilabel_report(Y, S), {
        "mAP": MAP, "CP": 0.5, "CR": 0.5, "CF1": 0.5,
        "OP": 4 / 6, "OR": 4 / 7, "OF1": 8 / 13})


def test_per_class_thresholds_by_hand():
    # c0 >= .95: nothing -> P 0, R 0;  c1 >= .65: img1 (+) -> P 1, R 1/2
    # c2 >= .5: img1 (+), img2 (-) -> P 1/2, R 1/2;  c3 >= .25: img1 (+) -> P 1, R 1
    rep = multilabel_report(Y, S, threshold=np.array([0.95, 0.65, 0.5, 0.25]))
    check(rep, {"mAP": MAP, "CP": 2.5 / 4, "CR": 2 / 4, "CF1": 5 / 9,
                "OP": 3 / 4, "OR": 3 / 7, "OF1": 6 / 11})


def test_top3_by_hand():
    # img0 {c0,c1,c2}, img1 {c2,c1,c3}, img2 {c0,c2,c1}
    # c0: 2/2/2 -> 1, 1;  c1: 2/3/2 -> 2/3, 1;  c2: 2/3/2 -> 2/3, 1;  c3: 1/1/1 -> 1, 1
    rep = multilabel_report(Y, S, top_k=3)
    check(rep, {"mAP": MAP, "CP": 5 / 6, "CR": 1.0, "CF1": 10 / 11,
                "OP": 7 / 9, "OR": 1.0, "OF1": 7 / 8})


def test_top1_requiring_threshold():
    # top-1: img0 c0 (.9), img1 c2 (.8), img2 c0 (.6); only .9 passes 0.85 (ML-GCN overall_topk)
    rep = multilabel_report(Y, S, threshold=0.85, top_k=1, top_k_requires_threshold=True)
    check(rep, {"CP": 0.25, "CR": 0.125, "OP": 1.0, "OR": 1 / 7})
    rep = multilabel_report(Y, S, threshold=0.85, top_k=1)  # plain top-1 ignores threshold
    check(rep, {"OP": 3 / 3, "OR": 3 / 7})


def test_threshold_is_inclusive():
    # at 0.6, img0 c1 (0.6) and img2 c0 (0.6) are predicted
    rep = multilabel_report(Y, S, threshold=0.6)
    # c0: img0, img2 (both +) -> 1, 1; c1: img0 (-), img1 (+) -> .5, .5; c2: img1 (+) -> 1, .5
    check(rep, {"CP": 2.5 / 4, "CR": 2 / 4, "OP": 4 / 5, "OR": 4 / 7})


def test_zero_division_conventions():
    y = np.array([[1, 0, 0], [1, 0, 0]])
    s = np.array([[0.9, 0.1, 0.7], [0.2, 0.3, 0.1]])
    # c0: P 1, R 1/2. c1 (no positive, never predicted) and c2 (no positive, one false
    # positive) are left out of CP/CR; c2's false positive counts in OP.
    check(multilabel_report(y, s), {"mAP": 1.0, "CP": 1.0, "CR": 0.5, "CF1": 2 / 3,
                                    "OP": 0.5, "OR": 0.5, "OF1": 0.5})
    rep = multilabel_report(np.zeros((2, 2)), np.ones((2, 2)))
    assert np.isnan(rep["mAP"]) and np.isnan(rep["CP"]) and np.isnan(rep["OR"])
    assert rep["OP"] == 0.0
    rep = multilabel_report(np.ones((2, 2)), np.zeros((2, 2)))  # nothing predicted
    assert (rep["OP"], rep["OR"], rep["OF1"], rep["CF1"]) == (0.0, 0.0, 0.0, 0.0)


def test_ignored_entries():
    y = Y.copy()
    y[0, 1] = -1  # img0 c1 was a false positive at 0.5: now it counts nowhere
    rep = multilabel_report(y, S)
    # c1: TP 1 / pred 1 / pos 2 -> P 1, R .5; so CP = (1 + 1 + .5 + 0) / 4
    check(rep, {"CP": 2.5 / 4, "CR": 0.5, "OP": 4 / 5, "OR": 4 / 7})


def test_against_sklearn_random():
    rng = np.random.default_rng(0)
    y = (rng.random((60, 7)) < 0.3).astype(int)
    y[0] = 1
    s = rng.random((60, 7))
    thr = rng.uniform(0.3, 0.7, size=7)
    rep = multilabel_report(y, s, threshold=thr)
    pred = (s >= thr).astype(int)
    cp = np.mean([precision_score(y[:, k], pred[:, k], zero_division=0) for k in range(7)])
    cr = np.mean([recall_score(y[:, k], pred[:, k]) for k in range(7)])
    assert rep["CP"] == pytest.approx(cp, abs=1e-12)
    assert rep["CR"] == pytest.approx(cr, abs=1e-12)
    assert rep["OP"] == pytest.approx(precision_score(y.ravel(), pred.ravel()), abs=1e-12)
    assert rep["OR"] == pytest.approx(recall_score(y.ravel(), pred.ravel()), abs=1e-12)


@pytest.mark.parametrize("kwargs,match", [
    ({"threshold": np.array([0.5, 0.5])}, "threshold must be a scalar or an array of shape"),
    ({"threshold": float("nan")}, "threshold contains NaN"),
    ({"top_k": 0}, "top_k must be None or an int in"),
    ({"top_k": 5}, "top_k must be None or an int in"),
])
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        multilabel_report(Y, S, **kwargs)
