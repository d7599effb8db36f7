"""AsymmetricLoss / AsymmetricLossSingleLabel against numpy references written from
arXiv:2009.14119 section 3."""
import keras
import numpy as np
import pytest

from keras_mld.losses import AsymmetricLoss, AsymmetricLossSingleLabel
from tests.support.helpers import grad_wrt_inputs, to_np
from tests.support.numpy_reference import finite_diff


# ----------------------------------------------------------------- numpy references (ASL,
# arXiv:2009.14119)
def np_sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def ref_asl_elements(x, y, gamma_neg, gamma_pos, clip, eps):
    """Per-element ASL in float64; ignored (-1) entries give 0."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    valid = y != -1
    y = np.where(valid, y, 0.0)
    p = np_sigmoid(x)
    p_m = np.maximum(p - clip, 0.0) if clip else p
    el = -(y * (1 - p) ** gamma_pos * np.log(np.maximum(p, eps))
           + (1 - y) * p_m ** gamma_neg * np.log(np.maximum(1 - p_m, eps)))
    return np.where(valid, el, 0.0)


def ref_asl(x, y, gamma_neg=4.0, gamma_pos=0.0, clip=0.05, eps=1e-8):
    """Sum over classes, mean over the batch."""
    return ref_asl_elements(x, y, gamma_neg, gamma_pos, clip, eps).sum(-1).mean()


def ref_asl_sl(x, onehot, valid, gamma_pos, gamma_neg, ls):
    """Per-sample single-label ASL; ``valid`` is elementwise (0/1)."""
    x = np.asarray(x, np.float64)
    n = x.shape[-1]
    z = x - x.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    p = np.exp(logp)
    w = np.where(onehot == 1, (1 - p) ** gamma_pos, p ** gamma_neg)
    t = onehot * (1 - ls) + ls / n
    return -(t * w * logp * valid).sum(-1)


# One shape everywhere: on JAX every new shape recompiles each eager op (seconds).
B, N = 4, 6


def rand_case(b=B, n=N, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(b, n)) * scale).astype(np.float32)
    y = (rng.random((b, n)) < 0.3).astype(np.float32)
    return x, y


SETTINGS = [  # gamma_neg, gamma_pos, clip
    (4.0, 0.0, 0.05),   # official training defaults
    (4.0, 1.0, 0.05),
    (1.0, 0.0, 0.0),    # Query2Label simplified
    (2.0, 1.0, None),
    (0.0, 0.0, 0.0),    # plain BCE (summed over classes)
    (0.5, 1.5, 0.2),    # fractional gammas: power at base 0
]


# ----------------------------------------------------------------- multi-label ASL
@pytest.mark.parametrize("gn,gp,clip", SETTINGS)
def test_asl_matches_numpy(gn, gp, clip):
    x, y = rand_case()
    loss = AsymmetricLoss(gamma_neg=gn, gamma_pos=gp, clip=clip)
    out = loss(y, x)
    assert tuple(out.shape) == () and keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(to_np(out), ref_asl(x, y, gn, gp, clip), rtol=1e-6)
    per_sample = to_np(AsymmetricLoss(gamma_neg=gn, gamma_pos=gp, clip=clip,
                                      reduction=None)(y, x))
    np.testing.assert_allclose(per_sample, ref_asl_elements(x, y, gn, gp, clip, 1e-8).sum(-1),
                               rtol=1e-6)


def test_asl_defaults_and_bce_crosscheck():
    loss = AsymmetricLoss()
    assert (loss.gamma_neg, loss.gamma_pos, loss.clip, loss.eps) == (4.0, 0.0, 0.05, 1e-8)
    assert loss.stop_focal_gradient is False
    x, y = rand_case()
    bce = keras.losses.BinaryCrossentropy(from_logits=True)(y, x)  # mean over classes
    ours = AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0)(y, x)
    np.testing.assert_allclose(to_np(ours), to_np(bce) * x.shape[1], rtol=1e-5)


@pytest.mark.parametrize("gn,gp,clip", SETTINGS)
def test_asl_extreme_logits(gn, gp, clip):
    x = np.array([[50, -50, 0, 30, -30, 17], [100, -100, -17, 3, -3, 0]] * 2, np.float32)
    y = np.array([[1, 1, 1, 0, 0, 1], [0, 0, 0, 1, 1, 0],
                  [0, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0]], np.float32)
    loss = AsymmetricLoss(gamma_neg=gn, gamma_pos=gp, clip=clip)
    out = to_np(loss(y, x))
    assert np.isfinite(out)
    np.testing.assert_allclose(out, ref_asl(x, y, gn, gp, clip), rtol=1e-6)
    (g,) = grad_wrt_inputs(lambda t: loss(y, t), x)
    assert np.all(np.isfinite(g))
    no_clamp = AsymmetricLoss(gamma_neg=gn, gamma_pos=gp, clip=clip, eps=0.0)
    (g,) = grad_wrt_inputs(lambda t: no_clamp(y, t), x)
    assert np.isfinite(to_np(no_clamp(y, x))) and np.all(np.isfinite(g))


@pytest.mark.parametrize("gn,gp,clip", [(4.0, 0.0, 0.05), (2.0, 1.0, 0.0), (0.5, 1.5, 0.2)])
def test_asl_gradient_matches_finite_differences(gn, gp, clip):
    x, y = rand_case(scale=2.0, seed=1)
    (g,) = grad_wrt_inputs(lambda t: AsymmetricLoss(gn, gp, clip)(y, t), x)
    fd = finite_diff(lambda v: ref_asl(v, y, gn, gp, clip), x)
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-6)


def test_asl_stop_focal_gradient_same_value_analytic_gradient():
    gn, gp, clip = 4.0, 1.0, 0.05
    x, y = rand_case(scale=2.0, seed=2)
    plain = AsymmetricLoss(gn, gp, clip)
    stopped = AsymmetricLoss(gn, gp, clip, stop_focal_gradient=True)
    np.testing.assert_allclose(to_np(plain(y, x)), to_np(stopped(y, x)), rtol=1e-7)
    (g_plain,) = grad_wrt_inputs(lambda t: plain(y, t), x)
    (g_stop,) = grad_wrt_inputs(lambda t: stopped(y, t), x)
    assert np.max(np.abs(g_plain - g_stop)) > 1e-3
    # analytic: weights are constants, d log p = 1 - p, d log(1 - p_m) = -p (1 - p) / (1 - p_m)
    xd = x.astype(np.float64)
    p = np_sigmoid(xd)
    p_m = np.maximum(p - clip, 0.0)
    w_pos, w_neg = (1 - p) ** gp, p_m ** gn
    d_neg = np.where(p > clip, -p * (1 - p) / (1 - p_m), 0.0)
    expected = -(y * w_pos * (1 - p) + (1 - y) * w_neg * d_neg) / x.shape[0]
    np.testing.assert_allclose(g_stop, expected, rtol=1e-5, atol=1e-7)


def test_asl_ignore_mask_equals_dropping():
    x, y = rand_case(seed=3)
    rng = np.random.default_rng(3)
    ignore = rng.random(y.shape) < 0.3
    ignore[0] = True  # a fully ignored sample
    y_ign = np.where(ignore, -1.0, y).astype(np.float32)
    loss = AsymmetricLoss(gamma_neg=4.0, gamma_pos=1.0, clip=0.05, reduction=None)
    per_sample = to_np(loss(y_ign, x))
    dropped = [ref_asl_elements(x[i][~ignore[i]], y[i][~ignore[i]], 4.0, 1.0, 0.05, 1e-8).sum()
               for i in range(x.shape[0])]
    np.testing.assert_allclose(per_sample, dropped, rtol=1e-6, atol=1e-7)
    assert per_sample[0] == 0.0
    # changing ignored logits changes nothing; gradient there is exactly zero
    x2 = np.where(ignore, 50.0, x).astype(np.float32)
    np.testing.assert_allclose(to_np(loss(y_ign, x2)), per_sample, rtol=1e-7)
    (g,) = grad_wrt_inputs(lambda t: AsymmetricLoss(4.0, 1.0, 0.05)(y_ign, t), x)
    (g_full,) = grad_wrt_inputs(lambda t: AsymmetricLoss(4.0, 1.0, 0.05)(y, t), x)
    assert np.all(g[ignore] == 0.0)
    np.testing.assert_allclose(g[~ignore], g_full[~ignore], rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_asl_mixed_precision(dtype):
    x, y = rand_case(seed=4)
    loss = AsymmetricLoss(gamma_neg=4.0, gamma_pos=1.0)
    x_low = keras.ops.cast(x, dtype)
    for out in (loss(y, x_low), loss.call(keras.ops.cast(y, dtype), x_low)):
        if out.shape:
            out = keras.ops.mean(out)
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
        np.testing.assert_allclose(to_np(out), ref_asl(x, y, 4.0, 1.0, 0.05), rtol=2e-2)


# ----------------------------------------------------------------- single-label ASL
def sl_case(b=B, n=N, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(b, n)) * scale).astype(np.float32)
    ids = rng.integers(0, n, size=b)
    return x, ids, np.eye(n, dtype=np.float32)[ids]


@pytest.mark.parametrize("gp,gn,ls", [(0.0, 4.0, 0.1), (1.0, 2.0, 0.0), (0.5, 0.5, 0.3),
                                      (0.0, 0.0, 0.0)])
def test_asl_single_label_matches_numpy_all_label_formats(gp, gn, ls):
    x, ids, onehot = sl_case()
    loss = AsymmetricLossSingleLabel(gamma_pos=gp, gamma_neg=gn, label_smoothing=ls)
    expected = ref_asl_sl(x, onehot, np.ones_like(onehot), gp, gn, ls).mean()
    for y in (ids, ids[:, None], onehot, ids.astype(np.float32)):
        np.testing.assert_allclose(to_np(loss(y, x)), expected, rtol=1e-6)


def test_asl_single_label_defaults_and_cce_crosscheck():
    loss = AsymmetricLossSingleLabel()
    assert (loss.gamma_pos, loss.gamma_neg, loss.label_smoothing) == (0.0, 4.0, 0.1)
    x, ids, onehot = sl_case()
    cce = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    ours = AsymmetricLossSingleLabel(gamma_pos=0, gamma_neg=0, label_smoothing=0.1)
    np.testing.assert_allclose(to_np(ours(ids, x)), to_np(cce(onehot, x)), rtol=1e-5)


def test_asl_single_label_extreme_and_gradients():
    x = np.array([[50, -50, 0, 30, 0, 0], [-50, 50, -50, 50, 0, 0],
                  [100, -100, 0, 0, 0, 0], [-100, 100, 100, 0, 0, -100]], np.float32)
    ids = np.array([0, 0, 1, 5])
    for gp, gn in [(0.0, 4.0), (1.0, 1.0), (0.5, 0.5)]:
        loss = AsymmetricLossSingleLabel(gamma_pos=gp, gamma_neg=gn)
        out = to_np(loss(ids, x))
        onehot = np.eye(N)[ids]
        np.testing.assert_allclose(out, ref_asl_sl(x, onehot, 1.0, gp, gn, 0.1).mean(),
                                   rtol=1e-6)
        (g,) = grad_wrt_inputs(lambda t: loss(ids, t), x)
        assert np.all(np.isfinite(g))
    # moderate logits: gradient vs finite differences of the numpy reference
    x, ids, onehot = sl_case(scale=1.5, seed=5)
    loss = AsymmetricLossSingleLabel(gamma_pos=1.0, gamma_neg=2.0, label_smoothing=0.1)
    (g,) = grad_wrt_inputs(lambda t: loss(ids, t), x)
    fd = finite_diff(lambda v: ref_asl_sl(v, onehot, 1.0, 1.0, 2.0, 0.1).mean(), x)
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-6)
    stopped = AsymmetricLossSingleLabel(1.0, 2.0, 0.1, stop_focal_gradient=True)
    np.testing.assert_allclose(to_np(stopped(ids, x)), to_np(loss(ids, x)), rtol=1e-7)
    (g_stop,) = grad_wrt_inputs(lambda t: stopped(ids, t), x)
    assert np.max(np.abs(g - g_stop)) > 1e-3


def test_asl_single_label_ignore():
    x, ids, onehot = sl_case(seed=6)
    ids_ign = ids.copy()
    ids_ign[[1, 3]] = -1
    loss = AsymmetricLossSingleLabel(gamma_pos=1.0, gamma_neg=2.0, reduction=None)
    per_sample = to_np(loss(ids_ign, x))
    keep = ids_ign != -1
    expected = ref_asl_sl(x[keep], onehot[keep], 1.0, 1.0, 2.0, 0.1)
    np.testing.assert_allclose(per_sample[keep], expected, rtol=1e-6)
    assert np.all(per_sample[~keep] == 0.0)
    (g,) = grad_wrt_inputs(lambda t: AsymmetricLossSingleLabel(1.0, 2.0)(ids_ign, t), x)
    assert np.all(g[~keep] == 0.0) and np.all(np.isfinite(g))
    # one-hot format: -1 entries are dropped from the class sum; an all -1 row is ignored
    y_oh = onehot.copy()
    y_oh[0, (ids[0] + 1) % N] = -1
    y_oh[2] = -1
    valid = (y_oh != -1).astype(np.float64)
    per_sample = to_np(loss(y_oh, x))
    expected = ref_asl_sl(x, np.where(valid == 1, y_oh, 0), valid, 1.0, 2.0, 0.1)
    np.testing.assert_allclose(per_sample, expected, rtol=1e-6)
    assert per_sample[2] == 0.0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_asl_single_label_mixed_precision(dtype):
    x, ids, onehot = sl_case(seed=7)
    loss = AsymmetricLossSingleLabel()
    out = loss(ids, keras.ops.cast(x, dtype))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    expected = ref_asl_sl(x, onehot, 1.0, 0.0, 4.0, 0.1).mean()
    np.testing.assert_allclose(to_np(out), expected, rtol=2e-2)


def test_asl_scale_is_query2labels_asymmetric_loss_optimized():
    """Query2Label's ``AsymmetricLossOptimized(gamma_neg=2, gamma_pos=0, clip=0, eps=1e-5)``
    (lib/models/aslloss.py): ``-sum(y log(max(p, eps)) + (1 - y) p^2 log(max(1 - p, eps)))
    / B / N * 1000``, here from numpy; ``scale=1000 / N`` and the mean over the batch."""
    rs = np.random.RandomState(3)
    b, n = 4, 7
    x = (rs.randn(b, n) * 4).astype("float32")
    x[0, 0] = 30.0  # 1 - p below eps: the clamp
    y = (rs.rand(b, n) < 0.4).astype("float32")
    p = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    elem = y * np.log(np.maximum(p, 1e-5)) + (1 - y) * p ** 2 * np.log(np.maximum(1 - p, 1e-5))
    official = -elem.sum() / b / n * 1000
    loss = AsymmetricLoss(gamma_neg=2.0, gamma_pos=0.0, clip=0.0, eps=1e-5,
                          stop_focal_gradient=True, scale=1000.0 / n)
    np.testing.assert_allclose(to_np(loss(y, x)), official, rtol=1e-5)
    plain = AsymmetricLoss(gamma_neg=2.0, gamma_pos=0.0, clip=0.0, eps=1e-5)
    np.testing.assert_allclose(to_np(loss(y, x)), to_np(plain(y, x)) * 1000.0 / n, rtol=1e-6)
    for bad in (0.0, -1.0, float("nan"), "2"):
        with pytest.raises(ValueError, match="scale"):
            AsymmetricLoss(scale=bad)


# ----------------------------------------------------------------- config / saving / bad args
LOSSES = [
    AsymmetricLoss(gamma_neg=2.0, gamma_pos=1.0, clip=None, eps=1e-6, stop_focal_gradient=True,
                   scale=12.5, name="asl_x"),
    AsymmetricLossSingleLabel(gamma_pos=1.0, gamma_neg=3.0, label_smoothing=0.2,
                              stop_focal_gradient=True, reduction="sum"),
]


@pytest.mark.parametrize("loss", LOSSES, ids=lambda v: type(v).__name__)
def test_asl_config_round_trip(loss):
    config = loss.get_config()
    clone = type(loss).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss) and restored.get_config() == config
    x, ids, onehot = sl_case(seed=8)
    y = ids if isinstance(loss, AsymmetricLossSingleLabel) else onehot
    np.testing.assert_allclose(to_np(restored(y, x)), to_np(loss(y, x)), rtol=1e-7)


def test_asl_compiled_model_save_load_and_by_name(tmp_path):
    x, ids, onehot = sl_case(seed=9)
    for loss, y in [(LOSSES[0], onehot), (LOSSES[1], ids)]:
        model = keras.Sequential([keras.Input((N,)), keras.layers.Dense(N)])
        model.compile(optimizer="sgd", loss=loss)
        path = str(tmp_path / f"{type(loss).__name__}.keras")
        model.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
        assert type(loaded.loss) is type(loss)
        assert loaded.loss.get_config() == loss.get_config()
        value = loaded.evaluate(x, y, verbose=0)
        np.testing.assert_allclose(value, model.evaluate(x, y, verbose=0), rtol=1e-6)
        direct = loss(y, loaded.predict(x, verbose=0))  # Keras passes y_true as given
        np.testing.assert_allclose(value, to_np(direct), rtol=1e-5)
    for cls in (AsymmetricLoss, AsymmetricLossSingleLabel):
        name = f"keras_mld>{cls.__name__}"
        assert keras.saving.get_registered_name(cls) == name
        assert keras.saving.get_registered_object(name) is cls
        assert keras.saving.deserialize_keras_object(name) is cls


@pytest.mark.parametrize("cls,kwargs,arg", [
    (AsymmetricLoss, dict(gamma_neg=-1), "gamma_neg"),
    (AsymmetricLoss, dict(gamma_pos=-0.5), "gamma_pos"),
    (AsymmetricLoss, dict(gamma_pos=float("nan")), "gamma_pos"),
    (AsymmetricLoss, dict(clip=1.0), "clip"),
    (AsymmetricLoss, dict(clip=-0.1), "clip"),
    (AsymmetricLoss, dict(eps=-1e-8), "eps"),
    (AsymmetricLoss, dict(gamma_neg="4"), "gamma_neg"),
    (AsymmetricLoss, dict(stop_focal_gradient=1), "stop_focal_gradient"),
    (AsymmetricLossSingleLabel, dict(gamma_neg=-2), "gamma_neg"),
    (AsymmetricLossSingleLabel, dict(gamma_pos=-2), "gamma_pos"),
    (AsymmetricLossSingleLabel, dict(label_smoothing=1.5), "label_smoothing"),
])
def test_asl_bad_arguments(cls, kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        cls(**kwargs)
