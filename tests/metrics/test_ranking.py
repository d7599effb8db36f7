"""mAP (numpy) against scikit-learn and the definition written out; the streaming Keras metric."""
import keras
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from keras_mld.metrics import MeanAveragePrecision, average_precision, mean_average_precision
from tests.support.helpers import to_np


def spec_ap(labels, scores):
    """AP written out: sort descending, AP = 1/P sum over positives of precision@rank."""
    order = np.argsort(-scores)
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if labels[i] == 1:
            hits += 1
            total += hits / rank
    return total / hits


def random_case(rng, n, c, empty_col=None, p=0.3):
    y = (rng.random((n, c)) < p).astype(np.int64)
    y[rng.integers(n), :] = 1  # at least one positive per class ...
    if empty_col is not None:
        y[:, empty_col] = 0  # ... except this one
    s = rng.random((n, c))  # continuous: no ties
    return y, s


@pytest.mark.parametrize("n,c,empty", [(40, 4, 2), (7, 3, None), (301, 12, 0)])
def test_map_matches_sklearn_per_class(n, c, empty):
    rng = np.random.default_rng(n)
    y, s = random_case(rng, n, c, empty)
    m, per = mean_average_precision(y, s, return_per_class=True)
    ref = np.array([average_precision_score(y[:, k], s[:, k]) if y[:, k].any() else np.nan
                    for k in range(c)])
    np.testing.assert_allclose(per, ref, rtol=0, atol=1e-9)
    if empty is not None:
        assert np.isnan(per[empty])  # excluded, reported as NaN
    assert abs(m - np.nanmean(ref)) < 1e-9
    for k in range(c):
        if y[:, k].any():
            assert abs(average_precision(y[:, k], s[:, k]) - spec_ap(y[:, k], s[:, k])) < 1e-12


def test_hand_example_and_ties_match_sklearn():
    # ranks: 0.9 (+), 0.8 (-), 0.1 (+): AP = (1/1 + 2/3) / 2
    assert abs(average_precision([1, 0, 1], [0.9, 0.8, 0.1]) - 5 / 6) < 1e-12
    rng = np.random.default_rng(3)
    y, s = random_case(rng, 60, 5)
    s = np.round(s, 1)  # many ties: tie groups as in scikit-learn
    ref = np.mean([average_precision_score(y[:, k], s[:, k]) for k in range(5)])
    assert abs(mean_average_precision(y, s) - ref) < 1e-12


def test_ignored_entries_and_no_positive():
    rng = np.random.default_rng(5)
    y, s = random_case(rng, 50, 3)
    y_partial = y.copy()
    y_partial[rng.random(y.shape) < 0.2] = -1
    _, per = mean_average_precision(y_partial, s, return_per_class=True)
    for k in range(3):
        keep = y_partial[:, k] != -1
        assert abs(per[k] - average_precision_score(y_partial[keep, k], s[keep, k])) < 1e-12
    assert np.isnan(average_precision([0, 0, -1], [0.3, 0.2, 0.1]))
    assert np.isnan(mean_average_precision(np.zeros((4, 2)), np.ones((4, 2))))


@pytest.mark.parametrize("y,s,match", [
    (np.zeros((3, 2)), np.zeros((3, 3)), "same shape"),
    (np.full((3, 2), 2), np.zeros((3, 2)), "y_true must be binary"),
    (np.zeros((3, 2)), np.array([[0, 1], [np.nan, 0], [0, 0]]), "y_score contains NaN"),
    (np.zeros(3), np.zeros(3), "y_true must be 2-D"),
])
def test_validation(y, s, match):
    with pytest.raises(ValueError, match=match):
        mean_average_precision(y, s)


def test_average_precision_validation():
    with pytest.raises(ValueError, match="average_precision: y_score must be 1-D"):
        average_precision([1, 0], [[0.1, 0.2]])
    with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
        MeanAveragePrecision(0)
    with pytest.raises(ValueError, match="capacity must be an int >= 1"):
        MeanAveragePrecision(3, capacity=2.5)


N, CAP, B = 4, 48, 12  # one shape for every eager metric test: JAX compiles its ops once


def stream(metric, y, s, w=None):
    for i in range(0, len(y), B):
        sw = None if w is None else w[i:i + B]
        metric.update_state(y[i:i + B], s[i:i + B], sample_weight=sw)
    return float(to_np(metric.result()))


def test_keras_metric_streaming_equals_numpy():
    rng = np.random.default_rng(11)
    y, logits = random_case(rng, CAP, N, empty_col=2)
    logits = (4 * logits - 2).astype("float32")
    y[rng.random(y.shape) < 0.1] = -1
    y[:, 2] = np.where(y[:, 2] == 1, 0, y[:, 2])
    ref, per = mean_average_precision(y, 1 / (1 + np.exp(-logits)), return_per_class=True)
    metric = MeanAveragePrecision(N, capacity=CAP)
    got = stream(metric, y.astype("float32"), logits)  # 4 batches
    assert abs(got - ref) < 1e-6  # logits in the metric, probabilities in numpy: same ranks
    np.testing.assert_allclose(to_np(metric.per_class_result()), per, atol=1e-6)
    metric.reset_state()
    assert np.isnan(float(to_np(metric.result())))  # empty: no positives
    got = stream(metric, y[:36].astype("float32"), logits[:36])  # partly filled buffer
    assert abs(got - mean_average_precision(y[:36], logits[:36])) < 1e-6


def test_keras_metric_ties_and_sample_weight():
    rng = np.random.default_rng(12)
    y, s = random_case(rng, CAP, N)
    s = np.round(s, 1).astype("float32")
    w = (rng.random(CAP) < 0.7).astype("float32")
    y_masked = np.where(w[:, None] == 0, -1, y)
    metric = MeanAveragePrecision(N, capacity=CAP)
    assert abs(stream(metric, y, s, w) - mean_average_precision(y_masked, s)) < 1e-6


def test_keras_metric_overflow_is_nan():
    rng = np.random.default_rng(13)
    y, s = random_case(rng, CAP + B, N)
    s = s.astype("float32")
    metric = MeanAveragePrecision(N, capacity=CAP)
    exact = stream(metric, y[:CAP], s[:CAP])  # exactly full: still exact
    assert abs(exact - mean_average_precision(y[:CAP], s[:CAP])) < 1e-6
    metric.update_state(y[CAP:], s[CAP:])  # one batch too many
    assert int(to_np(metric.count)) == CAP + B
    assert np.isnan(float(to_np(metric.result())))
    assert np.isnan(to_np(metric.per_class_result())).all()
    metric.reset_state()
    assert abs(stream(metric, y[B:], s[B:]) - mean_average_precision(y[B:], s[B:])) < 1e-6
    metric.reset_state()
    metric.update_state(y, s)  # a single batch larger than the whole buffer: NaN, no crash
    assert np.isnan(float(to_np(metric.result())))


def test_keras_metric_nan_score_gives_nan():
    rng = np.random.default_rng(14)
    y, s = random_case(rng, B, N)
    s[3, 1] = np.nan
    metric = MeanAveragePrecision(N, capacity=CAP)
    metric.update_state(y, s)
    assert np.isnan(float(to_np(metric.result())))


def test_keras_metric_config_roundtrip():
    metric = MeanAveragePrecision(5, capacity=32, name="val_map")
    blob = keras.saving.serialize_keras_object(metric)
    assert blob["registered_name"] == "keras_mld>MeanAveragePrecision"
    clone = keras.saving.deserialize_keras_object(blob)
    assert (clone.num_classes, clone.capacity, clone.name) == (5, 32, "val_map")
    assert clone.get_config() == metric.get_config()


def _evaluate(jit_compile):
    rng = np.random.default_rng(21)
    y, s = random_case(rng, 48, 4)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Identity()])
    model.compile(loss="mse", metrics=[MeanAveragePrecision(4, capacity=64)],
                  jit_compile=jit_compile)
    logs = model.evaluate(s.astype("float32"), y.astype("float32"), batch_size=16,
                          verbose=0, return_dict=True)
    assert abs(logs["mAP"] - mean_average_precision(y, s)) < 1e-6
    # evaluate resets the state: a second call gives the same value, not an overflow
    logs = model.evaluate(s.astype("float32"), y.astype("float32"), batch_size=16,
                          verbose=0, return_dict=True)
    assert abs(logs["mAP"] - mean_average_precision(y, s)) < 1e-6


@pytest.mark.tf_only
@pytest.mark.parametrize("jit_compile", [True, False])
def test_model_evaluate_tf(jit_compile):
    _evaluate(jit_compile)


def test_model_evaluate_compiled_any_backend():
    _evaluate("auto")
