"""AAMLoss against a numpy reference written from Prokofiev & Sovrasov (arXiv:2209.06585), eq. 1."""
import keras
import numpy as np
import pytest

from keras_mld.losses import AAM_PRESETS, AAMLoss
from tests.support.helpers import grad_wrt_inputs, to_np
from tests.support.numpy_reference import finite_diff


def np_sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def ref_aam_elements(c, y, s=23.0, m=0.0, k=0.7, gamma_neg=1.0, gamma_pos=0.0, eps=1e-8):
    c = np.asarray(c, np.float64)
    y = np.asarray(y, np.float64)
    valid = y != -1
    y = np.where(valid, y, 0.0)
    p_pos = np_sigmoid(s * (c - m))
    p_neg = np_sigmoid(-s * (c + m))
    el = (-(k / s) * y * (1 - p_pos) ** gamma_pos * np.log(np.maximum(p_pos, eps))
          - ((1 - k) / s) * (1 - y) * (1 - p_neg) ** gamma_neg * np.log(np.maximum(p_neg, eps)))
    return np.where(valid, el, 0.0)


def ref_aam(c, y, **kw):
    return ref_aam_elements(c, y, **kw).sum(-1).mean()


# One shape everywhere: on JAX every new shape recompiles each eager op (seconds).
B, N = 4, 6


def cos_case(b=B, n=N, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.uniform(-1, 1, size=(b, n)).astype(np.float32)
    y = (rng.random((b, n)) < 0.3).astype(np.float32)
    return c, y


SETTINGS = [
    dict(s=23.0, m=0.0, k=0.7, gamma_neg=1.0, gamma_pos=0.0),   # COCO / defaults
    dict(s=17.0, m=0.0, k=0.7, gamma_neg=2.0, gamma_pos=1.0),   # VOC
    dict(s=10.0, m=0.1, k=0.5, gamma_neg=0.5, gamma_pos=1.5),
    dict(s=30.0, m=-0.05, k=1.0, gamma_neg=0.0, gamma_pos=0.0),
]


@pytest.mark.parametrize("kw", SETTINGS)
def test_aam_matches_numpy(kw):
    c, y = cos_case()
    out = AAMLoss(**kw)(y, c)
    assert tuple(out.shape) == () and keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(to_np(out), ref_aam(c, y, **kw), rtol=1e-6)
    per_sample = to_np(AAMLoss(**kw, reduction=None)(y, c))
    np.testing.assert_allclose(per_sample, ref_aam_elements(c, y, **kw).sum(-1), rtol=1e-6)


def test_aam_defaults_and_presets():
    loss = AAMLoss()
    assert (loss.s, loss.m, loss.k, loss.gamma_neg, loss.gamma_pos, loss.eps) == (
        23.0, 0.0, 0.7, 1.0, 0.0, 1e-8)
    expected = {"coco": (23, 1, 0, 0.007), "voc": (17, 2, 1, 0.005),
                "nus_wide": (23, 2, 1, 0.009), "vg500": (25, 1, 0, 0.005)}
    for name, (s, gn, gp, lr) in expected.items():
        preset = AAMLoss.preset(name)
        assert (preset.s, preset.gamma_neg, preset.gamma_pos, preset.m, preset.k) == (
            s, gn, gp, 0.0, 0.7)
        assert AAM_PRESETS[name]["learning_rate"] == lr
    assert AAMLoss.preset("voc", k=0.5, name="aam_voc").get_config()["k"] == 0.5
    with pytest.raises(ValueError, match="dataset"):
        AAMLoss.preset("imagenet")


@pytest.mark.parametrize("kw", SETTINGS)
def test_aam_extreme_inputs(kw):
    c = np.array([[50, -50, 1, -1, 0, 3], [50, -50, 1, -1, 0, -3]] * 2, np.float32)
    y = np.array([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1],
                  [0, 1, 0, 1, 0, 1], [1, 0, 1, 0, 1, 0]], np.float32)
    loss = AAMLoss(**kw)
    out = to_np(loss(y, c))
    assert np.isfinite(out)
    np.testing.assert_allclose(out, ref_aam(c, y, **kw), rtol=1e-6)
    (g,) = grad_wrt_inputs(lambda t: loss(y, t), c)
    assert np.all(np.isfinite(g))
    for eps in (0.0, 1e-8):  # eps=0: no clamp, still finite thanks to log-sigmoid
        kw0 = dict(kw, eps=eps)
        (g,) = grad_wrt_inputs(lambda t: AAMLoss(**kw0)(y, t), c)
        assert np.isfinite(to_np(AAMLoss(**kw0)(y, c))) and np.all(np.isfinite(g))


@pytest.mark.parametrize("kw", SETTINGS[:3])
def test_aam_gradient_matches_finite_differences(kw):
    c, y = cos_case(seed=1)
    c = (c * 0.5).astype(np.float32)  # stay away from the eps clamp
    (g,) = grad_wrt_inputs(lambda t: AAMLoss(**kw)(y, t), c)
    fd = finite_diff(lambda v: ref_aam(v, y, **kw), c)
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-6)


def test_aam_gradient_analytic_no_focusing():
    # gamma = 0, m = 0: dL/dc = -k y (1 - p+) + (1 - k) (1 - y) (1 - p-), divided by the
    # batch size; zero where the eps clamp of the log is active (p < eps).
    s, k, eps = 20.0, 0.7, 1e-8
    c, y = cos_case(seed=2)
    (g,) = grad_wrt_inputs(lambda t: AAMLoss(s=s, k=k, gamma_neg=0, gamma_pos=0)(y, t), c)
    cd = c.astype(np.float64)
    p_pos, p_neg = np_sigmoid(s * cd), np_sigmoid(-s * cd)
    assert np.any(np.where(y == 1, p_pos, p_neg) < eps)  # the case exercises the clamp
    expected = (-k * y * (1 - p_pos) * (p_pos > eps)
                + (1 - k) * (1 - y) * (1 - p_neg) * (p_neg > eps))
    np.testing.assert_allclose(g, expected / c.shape[0], rtol=1e-5, atol=1e-7)


def test_aam_ignore_mask_equals_dropping():
    c, y = cos_case(seed=3)
    rng = np.random.default_rng(3)
    ignore = rng.random(y.shape) < 0.3
    ignore[2] = True
    y_ign = np.where(ignore, -1.0, y).astype(np.float32)
    kw = SETTINGS[1]
    per_sample = to_np(AAMLoss(**kw, reduction=None)(y_ign, c))
    dropped = [ref_aam_elements(c[i][~ignore[i]], y[i][~ignore[i]], **kw).sum()
               for i in range(c.shape[0])]
    np.testing.assert_allclose(per_sample, dropped, rtol=1e-6, atol=1e-8)
    assert per_sample[2] == 0.0
    (g,) = grad_wrt_inputs(lambda t: AAMLoss(**kw)(y_ign, t), c)
    (g_full,) = grad_wrt_inputs(lambda t: AAMLoss(**kw)(y, t), c)
    assert np.all(g[ignore] == 0.0)
    np.testing.assert_allclose(g[~ignore], g_full[~ignore], rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_aam_mixed_precision(dtype):
    c, y = cos_case(seed=4)
    loss = AAMLoss()
    c_low = keras.ops.cast(c, dtype)
    for out in (loss(y, c_low), keras.ops.mean(loss.call(keras.ops.cast(y, dtype), c_low))):
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
        np.testing.assert_allclose(to_np(out), ref_aam(c, y), rtol=3e-2)


def test_aam_config_round_trip_and_saving(tmp_path):
    loss = AAMLoss(s=17.0, m=0.05, k=0.6, gamma_neg=2.0, gamma_pos=1.0, eps=1e-7,
                   reduction="sum", name="aam_voc")
    config = loss.get_config()
    assert AAMLoss.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is AAMLoss and restored.get_config() == config
    c, y = cos_case(seed=5)
    np.testing.assert_allclose(to_np(restored(y, c)), to_np(loss(y, c)), rtol=1e-7)

    inputs = keras.Input((N,))
    model = keras.Model(inputs, keras.layers.Dense(N, activation="tanh")(inputs))
    model.compile(optimizer="sgd", loss=loss)
    path = str(tmp_path / "aam.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded.loss) is AAMLoss and loaded.loss.get_config() == config
    np.testing.assert_allclose(loaded.evaluate(c, y, verbose=0),
                               model.evaluate(c, y, verbose=0), rtol=1e-6)
    assert keras.saving.get_registered_name(AAMLoss) == "keras_mld>AAMLoss"
    assert keras.saving.get_registered_object("keras_mld>AAMLoss") is AAMLoss


@pytest.mark.parametrize("kwargs,arg", [
    (dict(s=0.0), "s"), (dict(s=-3.0), "s"), (dict(k=1.1), "k"), (dict(k=-0.1), "k"),
    (dict(gamma_neg=-1.0), "gamma_neg"), (dict(gamma_pos=-1.0), "gamma_pos"),
    (dict(eps=1.0), "eps"), (dict(m=float("inf")), "m"),
])
def test_aam_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        AAMLoss(**kwargs)
