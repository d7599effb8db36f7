"""Weight decay excludes biases and normalisation variables (true weight decay, as in
ML-Decoder, arXiv:2111.12933, appendix C)."""
import keras
import numpy as np
import pytest

from keras_mld.training import configure_weight_decay, weight_decay_exclusions

pytestmark = pytest.mark.tf_only

LR, WD = 0.1, 0.01


class _Custom(keras.layers.Layer):
    """A custom layer holding a 2-D matrix and a bias named by attribute ``bias``."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 2), name="w")
        self.bias = self.add_weight(shape=(2,), initializer="ones", name="offset")

    def call(self, x):
        return x @ self.w + self.bias


def _model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    h = keras.layers.Dense(5, name="dense")(inp)
    h = keras.layers.LayerNormalization(name="ln")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = _Custom(name="custom")(h)
    return keras.Model(inp, h)


def _by_path(model):
    return {v.path: v for v in model.trainable_variables}


def test_exclusion_decisions():
    model = _model()
    excluded = {v.path for v in weight_decay_exclusions(model, exclude_1d=False)}
    assert excluded == {"dense/bias", "ln/gamma", "ln/beta", "bn/gamma", "bn/beta",
                        "custom/offset"}  # custom bias found by attribute, not by name
    opt = keras.optimizers.SGD(LR, weight_decay=WD)
    configure_weight_decay(opt, model)
    v = _by_path(model)
    assert opt._use_weight_decay(v["dense/kernel"]) and opt._use_weight_decay(v["custom/w"])
    for p in excluded:
        assert not opt._use_weight_decay(v[p])


def test_zero_gradient_step_decays_only_kernels():
    model = _model()
    v = _by_path(model)
    v["ln/gamma"].assign(np.full((5,), 1.5, "float32"))
    v["dense/bias"].assign(np.full((5,), 0.3, "float32"))
    before = {p: x.numpy().copy() for p, x in v.items()}
    opt = keras.optimizers.SGD(LR, weight_decay=WD)
    configure_weight_decay(opt, model)
    opt.apply([np.zeros(x.shape, "float32") for x in model.trainable_variables],
              model.trainable_variables)
    # decoupled decay: w <- w - lr * wd * w (Keras multiplies by the learning rate)
    np.testing.assert_allclose(v["dense/kernel"].numpy(), before["dense/kernel"] * (1 - LR * WD),
                               rtol=1e-6)
    np.testing.assert_allclose(v["custom/w"].numpy(), before["custom/w"] * (1 - LR * WD), rtol=1e-6)
    assert not np.allclose(v["dense/kernel"].numpy(), before["dense/kernel"])
    for p in ("dense/bias", "ln/gamma", "ln/beta", "bn/gamma", "bn/beta", "custom/offset"):
        np.testing.assert_array_equal(v[p].numpy(), before[p])
    np.testing.assert_array_equal(v["ln/gamma"].numpy(), np.full((5,), 1.5, "float32"))


def test_adamw_and_embeddings_option():
    keras.utils.set_random_seed(0)
    inp = keras.Input((3,), dtype="int32")
    h = keras.layers.Embedding(10, 4, name="emb")(inp)
    out = keras.layers.Dense(2, name="head")(h)
    model = keras.Model(inp, out)
    assert {v.path for v in weight_decay_exclusions(model)} == {"head/bias"}
    assert {v.path for v in weight_decay_exclusions(model, exclude_embeddings=True)} == {
        "head/bias", "emb/embeddings"}
    opt = keras.optimizers.AdamW(1e-3, weight_decay=0.1)
    configure_weight_decay(opt, model, exclude_embeddings=True)
    v = _by_path(model)
    assert not opt._use_weight_decay(v["emb/embeddings"])
    assert opt._use_weight_decay(v["head/kernel"])


def test_exclude_1d_default_covers_rank1_variables():
    class Scale(keras.layers.Layer):
        def build(self, s):
            self.layer_scale = self.add_weight(shape=(s[-1],), initializer="ones",
                                               name="layer_scale")

        def call(self, x):
            return x * self.layer_scale

    inp = keras.Input((4,))
    model = keras.Model(inp, Scale(name="ls")(keras.layers.Dense(4, use_bias=False, name="d")(inp)))
    assert [v.path for v in weight_decay_exclusions(model)] == ["ls/layer_scale"]
    assert weight_decay_exclusions(model, exclude_1d=False) == []


def test_errors():
    model = _model()
    with pytest.raises(ValueError, match="optimizer"):
        configure_weight_decay("adam", model)
    opt = keras.optimizers.SGD(LR, weight_decay=WD)
    opt.build(model.trainable_variables)
    with pytest.raises(ValueError, match="already built"):
        configure_weight_decay(opt, model)
