"""ZSL / GZSL metrics against hand-computed values (NUS-WIDE top-k convention)."""
import numpy as np
import pytest

from keras_mld.metrics import precision_recall_f1_at_k, zsl_report

# 4 images x 5 labels; labels 3 and 4 are unseen. Image 2 has no unseen positive.
Y = np.array([[1, 0, 0, 1, 0],
              [0, 1, 0, 0, 1],
              [0, 0, 1, 0, 0],
              [1, 1, 0, 1, 1]])
S = np.array([[0.9, 0.1, 0.2, 0.8, 0.3],
              [0.2, 0.7, 0.1, 0.4, 0.6],
              [0.1, 0.2, 0.9, 0.5, 0.3],
              [0.5, 0.6, 0.1, 0.3, 0.4]])
UNSEEN = [3, 4]


def test_gzsl_top3_by_hand():
    # top-3 per image: img0 c0 c3 c4 -> 2 TP; img1 c1 c4 c3 -> 2; img2 c2 c3 c4 -> 1;
    # img3 c1 c0 c4 -> 3. TP 8 of 12 predictions, 9 positives.
    r = precision_recall_f1_at_k(Y, S, k=3)
    assert r["precision"] == pytest.approx(8 / 12)
    assert r["recall"] == pytest.approx(8 / 9)
    assert r["f1"] == pytest.approx(16 / 21)
    assert r["num_images"] == 4
    r = precision_recall_f1_at_k(Y, S, k=5)  # every label: P = 9 / 20, R = 1
    assert (r["precision"], r["recall"], r["f1"]) == pytest.approx((9 / 20, 1.0, 18 / 29))


def test_zsl_drops_images_without_unseen_positive():
    yu, su = Y[:, UNSEEN], S[:, UNSEEN]
    # image 2 dropped; top-1: img0 c3 (+), img1 c4 (+), img3 c4 (+): P 1, R 3/4
    r = precision_recall_f1_at_k(yu, su, k=1)
    assert (r["precision"], r["recall"], r["f1"], r["num_images"]) == \
        pytest.approx((1.0, 0.75, 6 / 7, 3))
    # kept, image 2 adds one false positive (c3, 0.5)
    r = precision_recall_f1_at_k(yu, su, k=1, drop_empty=False)
    assert (r["precision"], r["recall"], r["f1"]) == pytest.approx((0.75, 0.75, 0.75))


def test_zsl_report_by_hand():
    rep = zsl_report(Y, S, unseen=UNSEEN, ks=(1, 3))
    # ZSL mAP: c3 ranks .8(+) .5(-) .4(-) .3(+): (1 + 2/4)/2 = .75; c4 ranks .6(+) .4(+): 1
    assert rep["zsl"]["mAP"] == pytest.approx(0.875)
    assert rep["zsl"]["num_labels"] == 2
    assert (rep["zsl"]["P@1"], rep["zsl"]["R@1"], rep["zsl"]["F1@1"]) == \
        pytest.approx((1.0, 0.75, 6 / 7))
    # k = 3 > 2 unseen labels: both predicted for the 3 kept images: P 4/6, R 1
    assert (rep["zsl"]["P@3"], rep["zsl"]["R@3"], rep["zsl"]["F1@3"]) == \
        pytest.approx((4 / 6, 1.0, 0.8))
    # GZSL mAP: c0, c1, c2 and c4 have their positives first (AP 1), c3 .75
    assert rep["gzsl"]["mAP"] == pytest.approx(4.75 / 5)
    assert (rep["gzsl"]["P@3"], rep["gzsl"]["R@3"]) == pytest.approx((8 / 12, 8 / 9))
    mask = np.zeros(5, dtype=bool)
    mask[UNSEEN] = True
    assert zsl_report(Y, S, unseen=mask, ks=(1, 3)) == rep
    assert set(zsl_report(Y, S, UNSEEN)["gzsl"]) == {
        "mAP", "num_labels", "P@3", "R@3", "F1@3", "P@5", "R@5", "F1@5"}


def test_ignored_entry_in_top_k():
    y, s = np.array([[1, -1, 0]]), np.array([[0.2, 0.9, 0.5]])
    r = precision_recall_f1_at_k(y, s, k=2)  # ignored c1, negative c2: TP 0, FP 1
    assert (r["precision"], r["recall"], r["f1"]) == (0.0, 0.0, 0.0)
    r = precision_recall_f1_at_k(y, s, k=3)  # TP 1, FP 1 (the ignored slot counts nowhere)
    assert (r["precision"], r["recall"]) == (0.5, 1.0)


@pytest.mark.parametrize("unseen,match", [
    ([5], r"unseen indices must lie in \[0, 5\)"),
    ([3, 3], "must not repeat"),
    (np.zeros(4, dtype=bool), "boolean unseen mask must have shape"),
    (np.zeros(5, dtype=bool), "selects no label"),
    ([0.5], "integer label indices"),
])
def test_validation(unseen, match):
    with pytest.raises(ValueError, match=match):
        zsl_report(Y, S, unseen)


def test_k_validation():
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        precision_recall_f1_at_k(Y, S, k=0)
