"""The ``mldecoder_coco`` and ``mldecoder_nus_zsl`` recipes train as the official ML-Decoder
loops train, step for step.

Fixture: ``scripts/make_official_training_fixtures.py`` runs the official
``train_multi_label_coco`` (Alibaba-MIIL/ML_Decoder ``train.py``) for 80 steps (40 epochs
of 2 fixed batches, OneCycle peak at step 15) on a tiny conv-BN-ReLU x2 + official
ML-Decoder model; and ``train_multi_label_zsl`` (``train_zsl_nus.py``) likewise on the same
body (16x16 input) with the official zero-shot head (word-vector queries, shared projection;
feed-forward 64 wide), whose ``add_weight_decay`` decays the shared ``duplicate_pooling
[D, 1]`` (kept ``[D]`` here: ``GroupDense.matrix_variables``). Here ``keras_mld.training.fit`` runs the recipe's ``train`` section on
the same model (weights copied), the same batches, with the same three overrides (epochs,
lr, EMA decay) and no validation data (on JAX: the first epoch, run by
``tests/test_jax_backend.py``). Checked:

- the loss of every step, within 1e-4 relative;
- the final weights and the EMA weights, within 1e-3 of the size of the official update
  (``max |w_final - w_init|`` of each variable) plus 2 float32 ulps of the weights (after
  the first epoch the update is ~1e-5, a few ulps);
- BatchNorm moving statistics and their EMA: the moving means likewise; the moving
  variances after the one documented correction: PyTorch keeps the *unbiased* batch
  variance (``n / (n - 1)``, ``n = B * H * W``), Keras the biased one. Both start at 1 and
  average the same batch variances, so ``torch - c = n / (n - 1) * (keras - c)`` exactly,
  with ``c`` what the initial 1 has become (``(1 - m)^t``, and for the EMA its own average).

Excluded: the attention *key* biases, whose exact gradient is 0 (softmax is invariant to
them). Adam turns their float-noise gradients (~1e-10) into steps of ~lr on both sides,
differently; they change no output (the losses and all other weights agree), and the test
checks that they stay within ``steps * max_lr`` of their start. (The same holds for a
convolution bias before a training-mode BatchNorm, which is why the tiny model's
convolutions have none: such a bias would also shift the moving means.)
"""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mld.layers import MLDecoder, ZSLMLDecoder
from keras_mld.models.ml_decoder.convert import load_ml_decoder_weights, load_zsl_ml_decoder_weights
from keras_mld.recipes import load_recipe
from keras_mld.training.fit import fit
from tests.support.official import FIXTURES


def _fixture(setting="coco"):
    with np.load(FIXTURES / f"train_mldecoder_{setting}.npz") as z:
        data = {k: z[k] for k in z.files}
    config = json.loads(str(data.pop("config")))
    states = {kind: {k[len(kind) + 1:]: v for k, v in data.items() if k.startswith(kind + "/")}
              for kind in ("init", "first", "first_ema", "final", "ema")}
    return config, data, states


def _model(config):
    inp = keras.Input((config["size"], config["size"], 3))
    h = inp
    for filters in (8, 16):
        h = keras.layers.ZeroPadding2D(1)(h)  # torch padding=1 (Keras "same" pads 0 / 1)
        h = keras.layers.Conv2D(filters, 3, strides=2, use_bias=False)(h)
        h = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(h)  # torch defaults
        h = keras.layers.ReLU()(h)
    if config.get("setting") == "nus_zsl":  # the seen labels' word vectors as the label set
        head = ZSLMLDecoder(300, embed_dim=config["embed_dim"], num_heads=config["num_heads"],
                            ff_dim=config["ff_dim"], dropout=0.0,
                            label_capacity=config["classes"], num_labels=config["classes"])
        model = keras.Model(inp, head(h))
        head.set_label_vectors(config["wordvecs_train"].T)
        return model
    head = MLDecoder(config["classes"], num_groups=config["groups"],
                     embed_dim=config["embed_dim"], num_heads=config["num_heads"],
                     ff_dim=config["ff_dim"], dropout=0.0)
    return keras.Model(inp, head(h))


def _load(model, state):
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    for i, (conv, bn) in enumerate(zip(convs, bns)):
        c, b = f"body.{3 * i}.", f"body.{3 * i + 1}."
        conv.kernel.assign(state[c + "weight"].transpose(2, 3, 1, 0))
        for var, key in ((bn.gamma, "weight"), (bn.beta, "bias"),
                         (bn.moving_mean, "running_mean"), (bn.moving_variance, "running_var")):
            var.assign(state[b + key])
    if isinstance(model.layers[-1], ZSLMLDecoder):
        load_zsl_ml_decoder_weights(model.layers[-1], state, prefix="head.")
    else:
        load_ml_decoder_weights(model.layers[-1], state, prefix="head.decoder.")


def _zero_gradient(path):
    """The attention key biases: softmax ignores them."""
    return "key" in path and path.endswith("bias")


def _values(model):
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.variables
            if "float" in str(v.dtype)}


class _StopAfter(keras.callbacks.Callback):
    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.epochs:
            self.model.stop_training = True


def _check(tmp_path, epochs_run, final_key, ema_key, setting="coco"):
    config, data, states = _fixture(setting)
    config["wordvecs_train"] = data.get("wordvecs_train")
    model = _model(config)
    _load(model, states["init"])
    init = _values(model)

    recipe = dict(load_recipe(f"mldecoder_{setting}")["train"])
    recipe.update(epochs=config["epochs"], lr=config["lr"], ema_momentum=config["ema_decay"],
                  metrics=[], tensorboard=False, mixed_precision="float32",
                  jit_compile=keras.backend.backend() == "jax")  # JAX: eager is slower
    ds = tf.data.Dataset.from_tensor_slices((data["x"], data["y"]))
    running = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: running.append((batch, float(logs["loss"]))))
    history = fit(model, ds, recipe=recipe, run_dir=str(tmp_path), verbose=0,
                  callbacks=[record, _StopAfter(epochs_run)])
    steps = epochs_run * config["steps_per_epoch"]

    # Keras logs the running mean of the epoch's losses: undo it
    losses, prev = [], 0.0
    for batch, mean in running:
        losses.append((batch + 1) * mean - batch * (prev if batch else 0.0))
        prev = mean
    np.testing.assert_allclose(losses, data["loss"][:steps], rtol=1e-4)

    ref = {}
    for kind, key in (("final", final_key), ("ema", ema_key)):
        twin = _model(config)
        _load(twin, states[key])
        ref[kind] = _values(twin)
    got = {"final": _values(model)}
    with history.ema.swapped():
        got["ema"] = _values(model)
    assert len(got["final"]) == len(ref["final"]) == len(init)

    b, side = config["batch"], config["size"]
    n = {8: b * (side // 2) ** 2, 16: b * (side // 4) ** 2}  # B * H * W per BatchNorm
    m, d = 0.1, config["ema_decay"]
    c_final = (1 - m) ** steps
    c_ema = d ** steps + sum((1 - d) * d ** (steps - k) * (1 - m) ** k
                             for k in range(1, steps + 1))
    max_lr = config["lr"]
    for kind, c in (("final", c_final), ("ema", c_ema)):
        for (path, keras_v), torch_v in zip(got[kind].items(), ref[kind].values()):
            start = init[path]
            if path.endswith("moving_variance"):
                torch_v = c + (torch_v - c) * (n[start.size] - 1) / n[start.size]
            if _zero_gradient(path):
                assert np.abs(keras_v - start).max() <= steps * max_lr, path
                continue
            size = np.abs(torch_v - start).max()
            if path.endswith(("queries/queries", "label_set")):  # frozen (requires_grad
                # False) / the word vectors (no weight in torch, set by update_wordvecs); the EMA
                np.testing.assert_allclose(keras_v, start, rtol=1e-6)  # rounds d*e+(1-d)*e
                continue
            assert size > 0, f"{kind} {path}: the official run did not move it"
            ulps = 2 * np.finfo(np.float32).eps * np.abs(torch_v).max()  # the weights' rounding
            np.testing.assert_allclose(keras_v, torch_v, rtol=0, atol=1e-3 * size + ulps,
                                       err_msg=f"{kind} {path}")


def test_mldecoder_coco_recipe_matches_official_loop(tmp_path):
    """All 80 steps (TensorFlow; ~25 s)."""
    _check(tmp_path, 40, "final", "ema")


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="a subset of the full test, "
                    "for the JAX run of tests/test_jax_backend.py")
def test_mldecoder_coco_recipe_first_epoch(tmp_path):
    """The first epoch (2 steps): cheap, so that tests/test_jax_backend.py runs it on JAX."""
    _check(tmp_path, 1, "first", "first_ema")


def test_mldecoder_nus_zsl_recipe_matches_official_loop(tmp_path):
    """All 80 steps of ``train_multi_label_zsl`` (TensorFlow; coupled L2 1e-2)."""
    _check(tmp_path, 40, "final", "ema", setting="nus_zsl")


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="a subset of the full test, "
                    "for the JAX run of tests/test_jax_backend.py")
def test_mldecoder_nus_zsl_recipe_first_epoch(tmp_path):
    """The zero-shot loop's first epoch, on JAX (tests/test_jax_backend.py)."""
    _check(tmp_path, 1, "first", "first_ema", setting="nus_zsl")
