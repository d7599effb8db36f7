"""OneCycle (Smith 2018, arXiv:1803.09820): values vs the closed form of torch's OneCycleLR
(cosine, two phases)."""
import math

import keras
import numpy as np
import pytest

from keras_mld.training import OneCycle

pytestmark = pytest.mark.tf_only


def _closed_form(t, max_lr, total, pct=0.2, div=25.0, final_div=1e4):
    init = max_lr / div
    low = init / final_div
    s1, s2 = pct * total - 1, total - 1
    t = min(t, s2)

    def cos(a, b, p):
        return b + (a - b) / 2 * (1 + math.cos(math.pi * p))

    return cos(init, max_lr, t / s1) if t <= s1 else cos(max_lr, low, (t - s1) / (s2 - s1))


def _lr(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_start_peak_end():
    s = OneCycle(0.01, total_steps=100)  # defaults: pct_start 0.2, div 25, final_div 1e4
    # computed in float32: relative tolerance 1e-5
    np.testing.assert_allclose(_lr(s, 0), 0.01 / 25, rtol=1e-5)            # start
    np.testing.assert_allclose(_lr(s, 19), 0.01, rtol=1e-5)                # peak at 0.2*100-1
    np.testing.assert_allclose(_lr(s, 99), 0.01 / 25 / 1e4, rtol=1e-5)     # end
    np.testing.assert_allclose(_lr(s, 500), 0.01 / 25 / 1e4, rtol=1e-5)    # clamped after
    assert s.initial_lr == pytest.approx(4e-4) and s.min_lr == pytest.approx(4e-8)


@pytest.mark.parametrize("total,pct", [(100, 0.2), (37, 0.3), (1000, 0.25)])
def test_all_steps_match_closed_form(total, pct):
    s = OneCycle(0.5, total_steps=total, pct_start=pct, div_factor=10.0, final_div_factor=100.0)
    got = np.asarray(keras.ops.convert_to_numpy(s(np.arange(total))))  # all steps at once
    exp = np.array([_closed_form(t, 0.5, total, pct, 10.0, 100.0) for t in range(total)])
    # float32 schedule vs float64 closed form: rtol 1e-5, atol 1e-6 * max_lr (cos cancellation)
    np.testing.assert_allclose(got, exp, rtol=1e-5, atol=5e-7)
    peak = int(np.argmax(got))
    assert abs(peak - (pct * total - 1)) <= 1


def test_serializable_and_used_by_optimizer():
    s = OneCycle(0.01, total_steps=50, pct_start=0.3)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert isinstance(restored, OneCycle) and restored.get_config() == s.get_config()
    opt = keras.optimizers.Adam(learning_rate=s)
    cfg = keras.optimizers.Adam.from_config(opt.get_config())
    assert isinstance(cfg.learning_rate, OneCycle) or isinstance(cfg._learning_rate, OneCycle)


@pytest.mark.parametrize("kwargs,arg", [({"max_lr": 0}, "max_lr"),
                                        ({"total_steps": 1}, "total_steps"),
                                        ({"pct_start": 1.0}, "pct_start"),
                                        ({"div_factor": 0}, "div_factor")])
def test_bad_arguments(kwargs, arg):
    base = {"max_lr": 0.1, "total_steps": 100}
    with pytest.raises(ValueError, match=arg):
        OneCycle(**{**base, **kwargs})
