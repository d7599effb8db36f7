"""SinePositionalEncoding2D vs a numpy implementation of DETR's sine encoding."""
import math

import keras
import numpy as np
import pytest

from keras_mld.layers import SinePositionalEncoding2D
from tests.support.helpers import to_np


def np_detr_sine(h, w, channels, temperature=10000.0, normalize=True, scale=2 * math.pi,
                 eps=1e-6):
    """DETR PositionEmbeddingSine (no padding mask), NHWC, written from the formula."""
    f = channels // 2
    y = np.cumsum(np.ones((h, w)), axis=0)
    x = np.cumsum(np.ones((h, w)), axis=1)
    if normalize:
        y = y / (y[-1:, :] + eps) * scale
        x = x / (x[:, -1:] + eps) * scale
    dim_t = temperature ** (2 * (np.arange(f) // 2) / f)
    px = x[:, :, None] / dim_t
    py = y[:, :, None] / dim_t
    px = np.stack([np.sin(px[:, :, 0::2]), np.cos(px[:, :, 1::2])], axis=3).reshape(h, w, f)
    py = np.stack([np.sin(py[:, :, 0::2]), np.cos(py[:, :, 1::2])], axis=3).reshape(h, w, f)
    return np.concatenate([py, px], axis=-1)


@pytest.mark.parametrize("h,w,c", [(3, 5, 8), (7, 2, 12), (1, 1, 4)])
def test_matches_numpy_detr(h, w, c):
    x = np.random.rand(2, h, w, c).astype("float32")
    out = to_np(SinePositionalEncoding2D()(x))
    assert out.shape == (2, h, w, c)
    ref = np_detr_sine(h, w, c)
    np.testing.assert_allclose(out[0], ref, atol=1e-5)
    np.testing.assert_allclose(out[1], ref, atol=1e-5)


def test_num_channels_temperature_and_unnormalised():
    x = np.zeros((1, 4, 3, 5), "float32")
    layer = SinePositionalEncoding2D(num_channels=16, temperature=100.0, normalize=False)
    out = to_np(layer(x))
    np.testing.assert_allclose(out[0], np_detr_sine(4, 3, 16, 100.0, normalize=False),
                               atol=1e-5)
    assert layer.compute_output_shape((None, 4, 3, 5)) == (None, 4, 3, 16)


def test_half_channels_y_then_x():
    out = to_np(SinePositionalEncoding2D()(np.zeros((1, 3, 4, 8), "float32")))[0]
    # first half depends only on the row, second half only on the column
    assert np.allclose(out[:, :1, :4], out[:, :, :4])
    assert np.allclose(out[:1, :, 4:], out[:, :, 4:])
    assert not np.allclose(out[0, 0, :4], out[1, 0, :4])


def test_dynamic_spatial_shape_in_functional_model():
    inp = keras.Input((None, None, 8))
    model = keras.Model(inp, SinePositionalEncoding2D()(inp))
    for h, w in [(2, 3), (5, 4)]:
        out = model.predict(np.zeros((2, h, w, 8), "float32"), verbose=0)
        np.testing.assert_allclose(out[1], np_detr_sine(h, w, 8), atol=1e-5)


def test_config_round_trip():
    layer = SinePositionalEncoding2D(num_channels=8, temperature=20.0, scale=3.0, eps=1e-4)
    clone = SinePositionalEncoding2D.from_config(layer.get_config())
    x = np.zeros((1, 2, 3, 4), "float32")
    np.testing.assert_array_equal(to_np(layer(x)), to_np(clone(x)))
    assert keras.saving.get_registered_name(SinePositionalEncoding2D) == (
        "keras_mld>SinePositionalEncoding2D")


def test_mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        out = SinePositionalEncoding2D()(np.zeros((1, 3, 3, 8), "float32"))
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        np.testing.assert_allclose(to_np(out).astype("float32")[0], np_detr_sine(3, 3, 8),
                                   atol=2e-3)
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("kwargs", [dict(num_channels=6), dict(num_channels=0),
                                    dict(temperature=0), dict(scale=-1.0)])
def test_bad_args(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SinePositionalEncoding2D(**kwargs)


def test_bad_input():
    with pytest.raises(ValueError, match="rank 4"):
        SinePositionalEncoding2D()(np.zeros((1, 3, 8), "float32"))
    with pytest.raises(ValueError, match="multiple of 4"):
        SinePositionalEncoding2D()(np.zeros((1, 3, 3, 6), "float32"))
