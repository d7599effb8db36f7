"""The ``query2label_coco`` and ``ctran_coco`` recipes train as the official loops train, step
for step.

Fixtures: ``scripts/make_official_training_fixtures_query2label.py`` and
``scripts/make_official_training_fixtures_ctran.py`` run the official
Query2Label ``main_worker`` (SlongLiu/query2labels ``main_mlc.py``: AdamW over all trainable
parameters, OneCycleLR with beta1 cycling, ``AsymmetricLossOptimized`` with the focal
gradient off, ``ModelEma`` of the whole state, frozen BatchNorm / stem / ``layer1``) for
24 steps (12 epochs of 2 fixed batches, OneCycle peak at step 5 of 24) and C-Tran's ``main.py``
(QData/C-Tran: Adam, BCE summed over the unknown labels with fixed label masks,
ReduceLROnPlateau on the validation loss, reduced once after epoch 7) for 20 steps, each on
a tiny conv-BN-ReLU network + the official head. Here ``keras_mld.training.fit`` runs each
recipe's ``train`` section on the same model (weights copied) and batches, with the same
overrides (epochs, lr; Query2Label: EMA decay, the tiny network's layer names to freeze
and the loss scale 1000 / N for N = 10). Checked (``tests/support/official_training.py``):

- the loss of every step, within 1e-4 relative; the lr of every step (OneCycle / plateau);
- the final weights (Query2Label: and the EMA weights), within 1e-3 of the size of the
  official update plus 2 float32 ulps; frozen variables (Query2Label's stem, ``layer1``
  and every BatchNorm) unchanged on both sides;
- C-Tran's BatchNorm moving statistics after the documented correction (PyTorch keeps the
  unbiased batch variance, ``n / (n - 1)``) and its validation losses (Keras: the batch
  sum; official: divided by the 8 samples);
- the attention *key* biases (exact gradient 0: softmax ignores them) follow float noise
  under Adam on both sides: only checked to stay within ``steps * max_lr`` (plus, for
  AdamW, their decay) of their start.

Query2Label's early stop: the official loop was also run with scripted (regular, EMA)
mAPs; :class:`Query2LabelEarlyStopping` must stop at the same epochs. The first epoch of
each comparison also runs on JAX (``tests/test_jax_backend.py``).
"""
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mld.convert import convert_ctran_state_dict, convert_query2label_state_dict
from keras_mld.models.ctran.convert import load_ctran_state_dict
from keras_mld.models.query2label.convert import load_query2label_state_dict
from keras_mld.recipes import load_recipe
from keras_mld.training.query2label_stop import Query2LabelEarlyStopping, Query2LabelStopRule
from tests.support.official_training import (assert_update_close, biased_variance, fit_epochs,
                                             float_values, initial_variance_left,
                                             load_training_fixture)


def _fixture(name, kinds):
    config, data, states = load_training_fixture(name, kinds)
    data["x"] = data["x"].astype("float32") / 255.0
    return config, data, states


def _conv_bn_relu(h, filters, stride, name, trainable_bn=True):
    h = keras.layers.ZeroPadding2D(1)(h)  # torch padding=1
    h = keras.layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=f"{name}conv")(h)
    h = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}bn")(h)
    return keras.layers.ReLU()(h)


def _load_conv_bn(model, name, state, conv_key, bn_key):
    model.get_layer(f"{name}conv").kernel.assign(state[conv_key].transpose(2, 3, 1, 0))
    bn = model.get_layer(f"{name}bn")
    for var, key in ((bn.gamma, "weight"), (bn.beta, "bias"), (bn.moving_mean, "running_mean"),
                     (bn.moving_variance, "running_var")):
        var.assign(state[f"{bn_key}.{key}"])


# ------------------------------------------------------------------------- Query2Label
def _q2l_model(config, state):
    inp = keras.Input((config["size"], config["size"], 3))
    h = _conv_bn_relu(inp, 8, 2, "conv1_")
    h = _conv_bn_relu(h, 8, 1, "layer1_")
    h = _conv_bn_relu(h, 16, 2, "layer2_")
    head = convert_query2label_state_dict(state, num_heads=config["num_heads"], pre_norm=False,
                                          dropout=0.0)
    model = keras.Model(inp, head(h))
    _load_q2l(model, state)
    return model


def _load_q2l(model, state):
    body = "backbone.0.body."
    _load_conv_bn(model, "conv1_", state, body + "conv1.weight", body + "bn1")
    _load_conv_bn(model, "layer1_", state, body + "layer1.0.weight", body + "layer1.1")
    _load_conv_bn(model, "layer2_", state, body + "layer2.0.weight", body + "layer2.1")
    load_query2label_state_dict(model.get_layer("query2label"), state)


def _check_q2l(tmp_path, epochs_run, final_key, ema_key):
    config, data, states = _fixture("query2label_coco", ("init", "first", "first_ema", "final",
                                                         "ema"))
    model = _q2l_model(config, states["init"])
    init = float_values(model)

    recipe = dict(load_recipe("query2label_coco")["train"])
    loss = dict(recipe["loss"], scale=1000.0 / config["classes"])  # the recipe's is 1000 / 80
    recipe.update(epochs=config["epochs"], lr=config["lr"], ema_momentum=config["ema_decay"],
                  metrics=[], tensorboard=False, loss=loss,
                  freeze_layers=["conv1_", "layer1_"],  # the tiny network's names
                  jit_compile=keras.backend.backend() == "jax")
    ds = tf.data.Dataset.from_tensor_slices((data["x"], data["y"]))
    record, history = fit_epochs(model, ds, recipe, tmp_path, epochs_run)
    steps = epochs_run * config["steps_per_epoch"]
    # the official requires_grad: only layer2's convolution and the head (FrozenBatchNorm2d)
    frozen = [v.path for v in model.non_trainable_variables]
    assert all(p.startswith(("conv1_", "layer1_", "layer2_bn")) for p in frozen), frozen
    assert len(frozen) == 3 * 4 + 2 and "layer2_conv/kernel" in [
        v.path for v in model.trainable_variables]
    np.testing.assert_allclose(record.lrs, data["lr"][:steps], rtol=1e-5)
    beta1 = keras.ops.convert_to_numpy(model.optimizer.beta_1(steps - 1))
    np.testing.assert_allclose(beta1, data["beta1"][steps - 1], rtol=1e-5)
    np.testing.assert_allclose(record.losses(), data["loss"][:steps], rtol=1e-4)

    got = {"final": float_values(model)}
    with history.ema.swapped():
        got["ema"] = float_values(model)
    for kind, key in (("final", final_key), ("ema", ema_key)):
        twin = _q2l_model(config, states["init"])
        _load_q2l(twin, states[key])
        # frozen: the stem, layer1 and every BatchNorm (FrozenBatchNorm2d)
        assert_update_close(got[kind], float_values(twin), init, steps, config["lr"], kind,
                            frozen=("conv1_", "layer1_", "layer2_bn"),
                            decay=steps * config["lr"] * config["weight_decay"])


def test_query2label_coco_recipe_matches_official_loop(tmp_path):
    """All 24 steps (TensorFlow)."""
    _check_q2l(tmp_path, 12, "final", "ema")


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="a subset of the full test, "
                    "for the JAX run of tests/test_jax_backend.py")
def test_query2label_coco_recipe_first_epoch(tmp_path):
    _check_q2l(tmp_path, 1, "first", "first_ema")


def test_query2label_early_stop_is_the_official_rule():
    """Scripted (regular, EMA) mAP sequences: the official loop broke after
    ``stop_epochs`` epochs (30 = ran to the end)."""
    _, data, _ = _fixture("query2label_coco", ())
    assert 0 < sum(e < 30 for e in data["stop_epochs"]) < len(data["stop_epochs"])
    for maps, official in zip(data["stop_maps"], data["stop_epochs"]):
        cb = Query2LabelEarlyStopping(patience=8)
        cb.set_model(types.SimpleNamespace(stop_training=False))
        cb.on_train_begin()
        ran = 0
        for epoch, (regular, ema) in enumerate(maps):
            cb.on_epoch_begin(epoch)
            cb.on_epoch_end(epoch, {"val_mAP": regular, "val_ema_mAP": ema})
            ran += 1
            if cb.model.stop_training:
                break
        assert ran == official, (maps.tolist(), ran, official)


def test_query2label_stop_rule_by_hand_and_errors():
    rule = Query2LabelStopRule(patience=2)
    # the best regular and the best max(regular, EMA) are both at epoch 1 (0.5; the EMA's
    # best, 0.45 at epoch 2, is below it): stop once more than 2 epochs past epoch 1 with
    # the EMA below its best; an EMA back at its best keeps going
    seq = [(0.1, 0.1), (0.5, 0.2), (0.4, 0.45), (0.3, 0.44), (0.3, 0.45), (0.3, 0.44)]
    assert [rule.update(*p)[0] for p in seq] == [False] * 5 + [True]
    assert (rule.best_epoch, rule.best_regular_epoch, rule.best_ema) == (1, 1, 0.45)
    with pytest.raises(ValueError, match="patience"):
        Query2LabelStopRule(patience=-1)
    cb = Query2LabelEarlyStopping()
    with pytest.raises(ValueError, match="val_ema_mAP"):
        cb.on_epoch_end(0, {"val_mAP": 0.5})


# ------------------------------------------------------------------------------ C-Tran
def _ctran_model(config, state):
    image = keras.Input((config["size"], config["size"], 3))
    known = keras.Input((config["classes"],))
    h = _conv_bn_relu(image, 8, 2, "a_")
    h = _conv_bn_relu(h, 16, 2, "b_")
    head = convert_ctran_state_dict(state, use_lmt=True, num_heads=config["heads"], dropout=0.0)
    model = keras.Model([image, known], head(h, known_labels=known))
    _load_ctran(model, state)
    return model


def _load_ctran(model, state):
    _load_conv_bn(model, "a_", state, "backbone.body.0.weight", "backbone.body.1")
    _load_conv_bn(model, "b_", state, "backbone.body.3.weight", "backbone.body.4")
    load_ctran_state_dict(model.get_layer("ctran"), state, use_lmt=True)


def _check_ctran(tmp_path, epochs_run, final_key):
    config, data, states = _fixture("ctran_coco", ("init", "first", "final"))
    model = _ctran_model(config, states["init"])
    init = float_values(model)
    # label-mask training: the revealed labels are inputs and -1 (skipped) in the targets
    masks, y = data["masks"], data["y"]
    targets = np.where(masks != -1, -1.0, y).astype("float32")
    assert (targets == -1).any() and (targets != -1).any()
    ds = tf.data.Dataset.from_tensor_slices(((data["x"], masks), targets))
    val = tf.data.Dataset.from_tensors(((data["x"][0], -np.ones_like(y[0])), 1.0 - y[0]))

    recipe = dict(load_recipe("ctran_coco")["train"])
    recipe.update(epochs=config["epochs"], lr=config["lr"], metrics=[], tensorboard=False,
                  monitor="val_loss", jit_compile=keras.backend.backend() == "jax")
    record, history = fit_epochs(model, ds, recipe, tmp_path, epochs_run, validation_data=val)
    steps = epochs_run * config["steps_per_epoch"]
    np.testing.assert_allclose(record.lrs, data["lr"][:steps], rtol=1e-6)
    np.testing.assert_allclose(record.losses(), data["loss"][:steps], rtol=1e-4)
    np.testing.assert_allclose(history.history["val_loss"],
                               data["valid_loss"][:epochs_run] * config["batch"], rtol=1e-4)

    twin = _ctran_model(config, states["init"])
    _load_ctran(twin, states[final_key])
    n = {8: 8 * 16 * 16, 16: 8 * 8 * 8}  # B * H * W per BatchNorm (channels -> n)
    assert_update_close(float_values(model), float_values(twin), init, steps, config["lr"],
                        "final", bn_correction=biased_variance(n, initial_variance_left(steps)))


def test_ctran_coco_recipe_matches_official_loop(tmp_path):
    """All 20 steps, the plateau reduction after epoch 7 included (TensorFlow)."""
    _check_ctran(tmp_path, 10, "final")


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="a subset of the full test, "
                    "for the JAX run of tests/test_jax_backend.py")
def test_ctran_coco_recipe_first_epoch(tmp_path):
    _check_ctran(tmp_path, 1, "first")
