"""SAM (Foret et al. (arXiv:2010.01412)): one SAMModel step equals the two-pass formula computed
independently."""
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mld.training import SAMModel

pytestmark = pytest.mark.tf_only

RHO, LR = 0.05, 0.1


def _linear(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((4,))
    return keras.Model(inp, keras.layers.Dense(3)(inp))


def _data(b=8):
    rs = np.random.RandomState(3)
    return rs.randn(b, 4).astype("float32"), rs.randn(b, 3).astype("float32")


def _numpy_sam_step(W, b, x, y):
    """SAM + SGD on L = mean((xW + b - y)^2), gradients by hand (float64)."""
    W, b, x, y = (a.astype(np.float64) for a in (W, b, x, y))
    n = y.size

    def grads(W_, b_):
        r = x @ W_ + b_ - y
        return 2.0 / n * x.T @ r, 2.0 / n * r.sum(0)

    gW, gb = grads(W, b)
    norm = np.sqrt((gW ** 2).sum() + (gb ** 2).sum())
    gW2, gb2 = grads(W + RHO * gW / norm, b + RHO * gb / norm)
    return W - LR * gW2, b - LR * gb2


@pytest.mark.parametrize("jit", [False, True])
def test_one_step_matches_numpy_formula(jit):
    x, y = _data()
    model = _linear()
    W0, b0 = (v.numpy().copy() for v in model.trainable_variables)
    sam = SAMModel(model, rho=RHO)
    sam.compile(keras.optimizers.SGD(LR), loss="mse", jit_compile=jit)
    sam.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    W_exp, b_exp = _numpy_sam_step(W0, b0, x, y)
    # float32 training vs float64 reference; XLA may reorder sums: 1e-6 absolute either way
    np.testing.assert_allclose(model.trainable_variables[0].numpy(), W_exp, atol=1e-6)
    np.testing.assert_allclose(model.trainable_variables[1].numpy(), b_exp, atol=1e-6)
    # and it is not the plain SGD step
    r = x @ W0 + b0 - y
    plain_sgd = W0 - LR * 2 / y.size * x.T @ r
    assert np.abs(model.trainable_variables[0].numpy() - plain_sgd).max() > 1e-4


def _mlp_bn(seed=1):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((4,))
    h = keras.layers.Dense(6, activation="tanh")(inp)
    h = keras.layers.BatchNormalization()(h)
    return keras.Model(inp, keras.layers.Dense(3)(h))


@pytest.mark.parametrize("jit", [False, True])
def test_mlp_with_batchnorm_matches_gradient_tape(jit):
    x, y = _data()
    model = _mlp_bn()
    init = [v.numpy().copy() for v in model.variables]
    # reference: explicit two-pass SAM with GradientTape on a twin model (assign w+e, restore)
    twin = _mlp_bn()
    for v, a in zip(twin.variables, init):
        v.assign(a)
    tv = twin.trainable_variables
    w0 = [v.numpy().copy() for v in tv]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(twin(x, training=True) - y))
    g = tape.gradient(loss, tv)
    moving_after_one_pass = [v.numpy().copy() for v in twin.non_trainable_variables]
    norm = tf.linalg.global_norm(g)
    for v, gi in zip(tv, g):
        v.assign_add(RHO * gi / norm)
    with tf.GradientTape() as tape:
        loss2 = tf.reduce_mean(tf.square(twin(x, training=True) - y))
    g2 = tape.gradient(loss2, tv)
    expected = [w - LR * gi.numpy() for w, gi in zip(w0, g2)]

    sam = SAMModel(model, rho=RHO)
    sam.compile(keras.optimizers.SGD(LR), loss="mse", jit_compile=jit)
    hist = sam.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for v, e in zip(model.trainable_variables, expected):
        np.testing.assert_allclose(v.numpy(), e, atol=1e-6)
    # BatchNorm statistics are updated once (first pass only); second-pass writes discarded
    for v, e in zip(model.non_trainable_variables, moving_after_one_pass):
        np.testing.assert_allclose(v.numpy(), e, atol=1e-6)
    # logged loss is the first-pass loss (at w)
    np.testing.assert_allclose(hist.history["loss"][0], float(loss), rtol=1e-5)


def test_inner_model_stays_functional_and_savable(tmp_path):
    model = _mlp_bn()
    sam = SAMModel(model)
    assert sam.inner_model is model and sam.rho == 0.05
    sam.compile(keras.optimizers.SGD(LR), loss="mse")
    x, y = _data()
    sam.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "inner.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded).__name__ == "Functional" and type(model).__name__ == "Functional"
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    clone = SAMModel.from_config(sam.get_config())
    assert isinstance(clone.inner_model, keras.Model) and clone.rho == 0.05
    twice = SAMModel.from_config(SAMModel(_mlp_bn(), second_pass_state=True).get_config())
    assert twice.second_pass_state is True and clone.second_pass_state is False
    with pytest.raises(ValueError, match="second_pass_state"):
        SAMModel(_mlp_bn(), second_pass_state="yes")


@pytest.mark.parametrize("rho", [0, -1.0, "0.05", None])
def test_bad_rho(rho):
    with pytest.raises(ValueError, match="rho"):
        SAMModel(_linear(), rho=rho)


_MIRRORED = textwrap.dedent("""
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from keras_mld.training import SAMModel
    rs = np.random.RandomState(0)
    x, y = rs.randn(16, 4).astype("float32"), rs.randn(16, 3).astype("float32")
    def make():
        keras.utils.set_random_seed(0)
        inp = keras.Input((4,))
        m = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Dense(5, activation="tanh")(inp)))
        s = SAMModel(m, 0.05)
        s.compile(keras.optimizers.Adam(0.01), loss="mse")
        return m, s
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    m1, s1 = make()
    s1.fit(ds, epochs=2, verbose=0)
    with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
        m2, s2 = make()
    s2.fit(ds, epochs=2, verbose=0)
    print("MAXDIFF", max(float(np.abs(a.numpy() - b.numpy()).max())
                         for a, b in zip(m1.trainable_variables, m2.trainable_variables)))
    print("ITER", int(s2.optimizer.iterations.numpy()))
""")


@pytest.mark.slow  # a fresh TensorFlow process (~10-30 s)
def test_mirrored_two_replicas_equals_single_device():
    """2 replicas (logical CPUs) with the same global batch give the single-device SAM update:
    the perturbation uses the all-reduced gradient and the optimizer steps once per batch."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-c", _MIRRORED], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(l.split() for l in out.stdout.splitlines() if l.startswith(("MAXDIFF", "ITER")))
    assert int(lines["ITER"]) == 4  # 2 epochs x 2 batches: one optimizer update per batch
    assert float(lines["MAXDIFF"]) < 1e-6
