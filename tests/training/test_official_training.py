"""The ``mldecoder_coco`` and ``mldecoder_nus_zsl`` recipes train as the official ML-Decoder
loops train, step for step.

Fixture: ``scripts/make_official_training_fixtures.py`` runs the official
``train_multi_label_coco`` (Alibaba-MIIL/ML_Decoder ``train.py``) for 80 steps (40 epochs
of 2 fixed batches, OneCycle peak at step 15) on a tiny conv-BN-ReLU x2 + official
ML-Decoder model; and ``train_multi_label_zsl`` (``train_zsl_nus.py``) likewise on the same
body (16x16 input) with the official zero-shot head (word-vector queries, shared projection;
feed-forward 64 wide), whose ``add_weight_decay`` decays the shared ``duplicate_pooling
[D, 1]`` (kept ``[D]`` here: ``GroupDense.matrix_variables``). Here
``keras_mld.training.fit`` runs the recipe's ``train`` section on the same model (weights
copied), the same batches, with the same three overrides (epochs, lr, EMA decay) and no
validation data (on JAX: the first epoch, run by ``tests/test_jax_backend.py``). Checked:

- the loss of every step, within 1e-4 relative;
- the final weights, the EMA weights, the BatchNorm moving statistics and their EMA, as
  ``tests/support/official_training.py`` compares them: within 1e-3 of the size of the
  official update plus 2 float32 ulps, the moving variances after PyTorch's unbiased-variance
  correction, the attention key biases (exact gradient 0) only bounded. (A convolution
  bias before a training-mode BatchNorm would also have an exact gradient 0 and shift the
  moving means, which is why the tiny model's convolutions have none.)
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mld.layers import MLDecoder, ZSLMLDecoder
from keras_mld.models.ml_decoder.convert import load_ml_decoder_weights, load_zsl_ml_decoder_weights
from keras_mld.recipes import load_recipe
from tests.support.official_training import (assert_update_close, biased_variance, fit_epochs,
                                             float_values, initial_variance_left,
                                             load_training_fixture, tiny_conv_body)

KINDS = ("init", "first", "first_ema", "final", "ema")


def _model(config):
    inp = keras.Input((config["size"], config["size"], 3))
    h = tiny_conv_body(inp)
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


def _check(tmp_path, epochs_run, final_key, ema_key, setting="coco"):
    config, data, states = load_training_fixture(f"mldecoder_{setting}", KINDS)
    config["wordvecs_train"] = data.get("wordvecs_train")
    model = _model(config)
    _load(model, states["init"])
    init = float_values(model)

    recipe = dict(load_recipe(f"mldecoder_{setting}")["train"])
    recipe.update(epochs=config["epochs"], lr=config["lr"], ema_momentum=config["ema_decay"],
                  metrics=[], tensorboard=False, mixed_precision="float32",
                  jit_compile=keras.backend.backend() == "jax")  # JAX: eager is slower
    ds = tf.data.Dataset.from_tensor_slices((data["x"], data["y"]))
    record, history = fit_epochs(model, ds, recipe, tmp_path, epochs_run)
    steps = epochs_run * config["steps_per_epoch"]
    np.testing.assert_allclose(record.losses(), data["loss"][:steps], rtol=1e-4)

    got = {"final": float_values(model)}
    with history.ema.swapped():
        got["ema"] = float_values(model)
    b, side = config["batch"], config["size"]
    n = {8: b * (side // 2) ** 2, 16: b * (side // 4) ** 2}  # B * H * W per BatchNorm
    for kind, key in (("final", final_key), ("ema", ema_key)):
        twin = _model(config)
        _load(twin, states[key])
        left = initial_variance_left(steps, ema_decay=config["ema_decay"] if kind == "ema"
                                     else None)
        # frozen: the queries (requires_grad False) and the word vectors (no weight in
        # torch, set by update_wordvecs)
        assert_update_close(got[kind], float_values(twin), init, steps, config["lr"], kind,
                            frozen=("queries/queries", "label_set"),
                            bn_correction=biased_variance(n, left))


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
