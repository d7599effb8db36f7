"""ModelStateEMA: the official ModelEma recurrence over weights and BatchNorm statistics
(numpy reference from the recorded states), and its resume file."""
import keras
import numpy as np
import pytest

from keras_mld.training.ema import ModelStateEMA


def _model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    h = keras.layers.BatchNormalization(momentum=0.5)(keras.layers.Dense(3)(inp))
    return keras.Model(inp, keras.layers.Dense(2)(h))


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.states = []

    def on_train_begin(self, logs=None):
        self.states.append([keras.ops.convert_to_numpy(v).copy() for v in self.model.variables])

    def on_train_batch_end(self, batch, logs=None):
        self.on_train_begin()


def test_recurrence_over_weights_and_batchnorm_statistics():
    model = _model()
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    rs = np.random.RandomState(0)
    x, y = rs.randn(12, 4).astype("float32"), rs.randn(12, 2).astype("float32")
    ema, rec = ModelStateEMA(decay=0.7), _Record()
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[rec, ema])
    expected = [s.astype("float64") for s in rec.states[0]]  # e_0 = w_0
    for state in rec.states[1:]:
        expected = [0.7 * e + 0.3 * s for e, s in zip(expected, state)]
    paths = [v.path for v in ema.variables]
    assert any("moving_variance" in p for p in paths) and any("moving_mean" in p for p in paths)
    for e, a, p in zip(expected, ema.averages, paths):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), e, rtol=1e-5, atol=1e-6,
                                   err_msg=p)
    raw = [keras.ops.convert_to_numpy(v).copy() for v in model.variables]
    with ema.swapped():
        for v, a in zip(model.variables, ema.averages):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(v),
                                          keras.ops.convert_to_numpy(a))
    for v, r in zip(model.variables, raw):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), r)  # restored exactly


def test_resume_file(tmp_path):
    path = tmp_path / "ema.npz"
    model = _model()
    first = ModelStateEMA(0.5, model=model, state_path=path)
    first.on_train_begin()
    model.layers[1].kernel.assign(model.layers[1].kernel + 1.0)
    first.on_train_batch_end(0)
    first.on_epoch_end(0)
    saved = [keras.ops.convert_to_numpy(a).copy() for a in first.averages]
    again = ModelStateEMA(0.5, model=model, state_path=path)
    again.on_train_begin()
    again.on_epoch_begin(1)  # resumed after epoch 0: the saved averages
    for a, s in zip(again.averages, saved):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), s)
    stale = ModelStateEMA(0.5, model=model, state_path=path)
    stale.on_train_begin()
    with pytest.warns(UserWarning, match="restarts"):
        stale.on_epoch_begin(3)
    again.on_train_end()
    assert not path.exists()
    path.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="ema.npz"):
        ModelStateEMA(0.5, model=model, state_path=path).on_train_begin()
    with pytest.raises(ValueError, match="decay"):
        ModelStateEMA(1.0)
