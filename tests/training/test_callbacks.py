"""EMA evaluation, the papers' early-stopping rule and the atomic best checkpoint (Prokofiev &
Sovrasov (arXiv:2209.06585) section 3.5)."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mld.training import (BestModelCheckpoint, EarlyStoppingRule, EMAEarlyStopping,
                                EMAEvaluation, SAMModel, ema_variables)

pytestmark = pytest.mark.tf_only

MOMENTUM = 0.9


def _data():
    rs = np.random.RandomState(0)
    x = rs.randn(32, 4).astype("float32")
    y = (x @ rs.randn(4, 3) + 0.1 * rs.randn(32, 3)).astype("float32")
    return (tf.data.Dataset.from_tensor_slices((x[:24], y[:24])).batch(8),
            tf.data.Dataset.from_tensor_slices((x[24:], y[24:])).batch(4), x[24:], y[24:])


def _model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    h = keras.layers.BatchNormalization()(keras.layers.Dense(6, activation="tanh")(inp))
    return keras.Model(inp, keras.layers.Dense(3)(h))


class _RecordWeights(keras.callbacks.Callback):
    def __init__(self, model):
        super().__init__()
        self.inner, self.seen = model, []

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append([v.numpy().copy() for v in self.inner.trainable_variables])


def test_ema_evaluation_matches_model_loaded_with_ema_weights():
    train, val, xv, yv = _data()
    model = _model()
    sam = SAMModel(model)  # EMA through the SAM wrapper (the recipe's combination)
    sam.compile(keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=MOMENTUM),
                loss="mse", metrics=["mae"])
    rec = _RecordWeights(model)
    ema_cb = EMAEvaluation(val)
    hist = sam.fit(train, validation_data=val, epochs=2, verbose=0, callbacks=[ema_cb, rec])
    h = hist.history
    assert {"val_loss", "val_mae", "val_ema_loss", "val_ema_mae"} <= set(h)

    # EMA variables equal the EMA of the per-step weights computed here (first value = w_1)
    ema = [w.astype(np.float64) for w in rec.seen[0]]
    for ws in rec.seen[1:]:
        ema = [MOMENTUM * e + (1 - MOMENTUM) * w for e, w in zip(ema, ws)]
    for e, v in zip(ema, ema_variables(model, sam.optimizer)):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-6)

    # Keras' fit ends with optimizer.finalize_variable_values: the model now holds the EMA
    for v, e in zip(model.trainable_variables, ema_variables(model, sam.optimizer)):
        np.testing.assert_array_equal(v.numpy(), e.numpy())

    def evaluate_with(trainable):
        twin = keras.models.clone_model(model)
        twin.set_weights(model.get_weights())  # BN statistics: the raw ones
        for t, w in zip(twin.trainable_variables, trainable):
            t.assign(w)
        twin.compile(loss="mse", metrics=["mae"])
        return twin.evaluate(xv, yv, batch_size=4, verbose=0)

    # a separate model loaded with the optimizer's EMA variables gives val_ema_*
    loss, mae = evaluate_with([e.numpy() for e in ema_variables(model, sam.optimizer)])
    np.testing.assert_allclose([h["val_ema_loss"][-1], h["val_ema_mae"][-1]], [loss, mae],
                               rtol=1e-5)
    # and the raw weights of the last step give val_*
    raw_loss, raw_mae = evaluate_with(rec.seen[-1])
    np.testing.assert_allclose([h["val_loss"][-1], h["val_mae"][-1]], [raw_loss, raw_mae],
                               rtol=1e-5)
    assert abs(loss - raw_loss) > 1e-4  # EMA and raw weights really differ

    # the swap restores the weights bit-exactly; without fit's val logs it evaluates both
    for v, w in zip(model.trainable_variables, rec.seen[-1]):
        v.assign(w)
    before = [v.numpy().copy() for v in model.variables]
    logs = {}
    ema_cb.on_epoch_end(1, logs)
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), b)
    np.testing.assert_allclose([logs["val_loss"], logs["val_ema_loss"]], [raw_loss, loss],
                               rtol=1e-5)


def _paper_stops(scores, **kw):
    rule = EarlyStoppingRule(**kw)
    for i, s in enumerate(scores):
        stop, _ = rule.update(s)
        if stop:
            return i
    return None


SCORES = [0.50, 0.60, 0.70, 0.69, 0.68, 0.69, 0.69, 0.69, 0.69, 0.60, 0.55]


def test_rule_on_synthetic_sequence():
    # bests 0.50, 0.60, 0.70 -> EMA (0.8): 0.50, 0.58, 0.676. From index 3 no new best;
    # wait reaches 5 at index 7 but 0.69 >= 0.676 (above the EMA of bests): go on;
    # index 9: 0.60 < 0.676 with wait 7 -> stop.
    rule = EarlyStoppingRule(patience=5, smoothing=0.8)
    for s in SCORES[:3]:
        rule.update(s)
    assert rule.ema == pytest.approx(0.676) and rule.best == pytest.approx(0.70)
    assert _paper_stops(SCORES) == 9
    # a plain patience rule would have stopped at index 7
    assert _paper_stops([-s for s in SCORES], mode="min") == 9  # losses: lower is better
    # a drop below the EMA alone does not stop before `patience` epochs without improvement
    assert _paper_stops([0.5, 0.6, 0.7, 0.1, 0.1, 0.1, 0.1, 0.8]) is None
    assert _paper_stops([0.5, 0.6, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1]) == 7
    # official variant: EMA from 0, updated by every score above it (see docstring):
    # 0.5 0.6 0.7 0.69 all exceed the EMA (0.4, 0.56, 0.672, 0.6864); 0.68 does not, the
    # next 0.69s do (0.68928 ...), then 0.60 0.55 0.55 0.55 0.55 (wait 1..5) -> stop at 13
    assert _paper_stops(SCORES + [0.55] * 2, rule="official") is None
    assert _paper_stops(SCORES + [0.55] * 3, rule="official") == 13


def test_rule_counts_after_the_warmup_and_rounds_as_official():
    # deep-object-reid: epochs before the end of OneCycle's warm-up never count as "not
    # improved" (an improvement still updates the EMA); scores are rounded to 4 decimals.
    falling = [0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1]
    assert _paper_stops(falling, rule="official") == 5
    assert _paper_stops(falling, rule="official", warmup_epochs=3) == 6  # counts from index 2
    assert _paper_stops(falling, rule="official", warmup_epochs=7) is None
    assert _paper_stops(falling) == 5 and _paper_stops(falling, warmup_epochs=3) == 6
    # 0.4 + 1e-5 rounds to 0.4: not above an EMA of 0.4 (smoothing 1)
    rule = EarlyStoppingRule(patience=1, smoothing=1.0, rule="official")
    rule.update(0.4)
    assert rule.update(0.4 + 1e-5)[0] and rule.ema == pytest.approx(0.4)
    assert EarlyStoppingRule(rule="official").update(0.99996)[0]  # rounds to 1: stop
    with pytest.raises(ValueError, match="warmup_epochs"):
        EarlyStoppingRule(warmup_epochs=-1)


def test_callback_stops_restores_best_and_resumes(tmp_path):
    model = _model()
    state = str(tmp_path / "es.json")

    def run(cb, start, stop_after=None):
        cb.set_model(model)
        cb.on_train_begin()
        for epoch in range(start, len(SCORES)):
            cb.on_epoch_begin(epoch)
            model.layers[-1].kernel.assign(np.full((6, 3), epoch, "float32"))
            cb.on_epoch_end(epoch, {"val_mAP": SCORES[epoch]})
            if model.stop_training or epoch == stop_after:
                return epoch

    model.stop_training = False
    cb = EMAEarlyStopping(patience=5, restore_best_weights=True, state_path=state)
    assert run(cb, 0) == 9 and cb.stopped_epoch == 9
    cb.on_train_end()
    np.testing.assert_array_equal(model.layers[-1].kernel.numpy(), 2.0)  # best epoch = 2
    assert not os.path.exists(state)

    # killed after epoch index 4 was logged but the backup holds 4 epochs: resume at 4
    model.stop_training = False
    run(EMAEarlyStopping(patience=5, state_path=state), 0, stop_after=4)
    model.stop_training = False
    resumed = EMAEarlyStopping(patience=5, state_path=state)
    assert run(resumed, 4) == 9 and resumed.rule.best == pytest.approx(0.70)


def test_best_checkpoint_is_atomic_and_holds_ema_weights(tmp_path):
    train, val, xv, yv = _data()
    model = _model()
    model.compile(keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=MOMENTUM), loss="mse")
    path = str(tmp_path / "best.keras")
    ckpt = BestModelCheckpoint(path, monitor="val_ema_loss")
    model.fit(train, validation_data=val, epochs=2, verbose=0,
              callbacks=[EMAEvaluation(val), ckpt])
    assert os.listdir(tmp_path) == ["best.keras"]  # no temporary file left behind
    loaded = keras.models.load_model(path, safe_mode=True)
    for a, b in zip(loaded.trainable_variables, ema_variables(model)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert ckpt.best == min(ckpt.values)
