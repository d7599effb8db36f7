"""The ``aam_*`` recipes train as deep-object-reid (Prokofiev & Sovrasov's released code)
trains, step for step.

Fixture: ``scripts/make_official_aam_training_fixtures.py`` runs the official train step
(``MultilabelEngine.forward_backward``: SAM's two training-mode forward passes,
``first_step`` / ``second_step`` over SGD with the ``nbd`` parameter groups, the official
``OneCycleLR`` stepped per batch, ``AMBinaryLoss``, ``ModelEmaV2``) with the released
config's values (``configs/EfficientNetV2_small_mld.yml``: lr 0.007, 60 epochs, ...) for
120 steps (60 epochs of 2 fixed batches, OneCycle peak at step 23) on a tiny
conv-BN-ReLU x2 + global pool + official ``AngleSimpleLinear`` model. Here
``keras_mld.training.fit`` runs the ``aam_coco`` recipe's ``train`` section (the four
``aam_*`` recipes share it) on the same model (``CosineDense`` head, weights copied) and
batches; only the EMA decay is overridden (0.9997 averages nothing visible in 120 steps).
Checked:

- the loss of every step (first SAM pass, at ``w``), within 1e-4 relative;
- the final weights and the EMA weights, within 1e-3 of the size of the official update
  (``max |w_final - w_init|`` per variable) plus 2 float32 ulps of the weights;
- BatchNorm moving statistics (updated by both SAM passes, twice per step) and their EMA:
  means likewise; variances after the documented correction of
  ``tests/support/official_training.py`` (PyTorch keeps the unbiased batch variance,
  ``n / (n - 1)``): ``torch - c = n / (n - 1) * (keras - c)`` with ``c`` what the initial
  1 has become, here ``(1 - m)^(2t)`` (two updates per step);
- the early stopping: the official ``exit_on_plateau_and_choose_best``, fed a fixed score
  sequence with the official scheduler's ``warmup_finished`` flags, stops at the same
  epoch as :class:`~keras_mld.training.callbacks.EarlyStoppingRule` with the recipe's
  ``early_stopping`` (``warmup_epochs`` computed by ``fit`` from the recipe).

No parameter of the tiny model has an exactly-zero gradient (the convolutions have no
bias before their training-mode BatchNorm), so nothing is excluded.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mld.layers import CosineDense
from keras_mld.recipes import load_recipe
from keras_mld.training.callbacks import EarlyStoppingRule
from keras_mld.training.fit import fit
from tests.support.official_training import (assert_update_close, biased_variance, fit_epochs,
                                             initial_variance_left, load_training_fixture,
                                             tiny_conv_body)

KINDS = ("init", "first", "first_ema", "final", "ema")


def _model(config):
    inp = keras.Input((config["size"], config["size"], 3))
    h = tiny_conv_body(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, CosineDense(config["classes"])(h))


def _pairs(model):
    """(keras variable, official state key) for every float variable."""
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    out = []
    for i, (conv, bn) in enumerate(zip(convs, bns)):
        out.append((conv.kernel, f"body.{3 * i}.weight"))
        out += [(bn.gamma, f"body.{3 * i + 1}.weight"), (bn.beta, f"body.{3 * i + 1}.bias"),
                (bn.moving_mean, f"body.{3 * i + 1}.running_mean"),
                (bn.moving_variance, f"body.{3 * i + 1}.running_var")]
    out.append((model.layers[-1].kernel, "head.weight"))
    return out


def _load(model, state):
    for var, key in _pairs(model):
        value = state[key]
        var.assign(value.transpose(2, 3, 1, 0) if value.ndim == 4 else value)


def _values(model):
    out = {}
    for var, key in _pairs(model):
        value = keras.ops.convert_to_numpy(var)
        out[key] = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value
    return out


def test_recipe_is_the_released_config():
    """The recipe's numbers are the official config's (as the fixture script read them)."""
    config, _, _ = load_training_fixture("aam_coco", ())
    for name in ("aam_coco", "aam_voc", "aam_nus_wide", "aam_vg500"):
        t = load_recipe(name)["train"]
        assert (t["lr"], t["weight_decay"], t["epochs"], t["pct_start"], t["final_div_factor"],
                t["div_factor"], t["sam_rho"]) == (config["lr"], config["weight_decay"],
                                                   config["epochs"], config["pct_start"],
                                                   config["lr_decay_factor"], 100.0,
                                                   config["rho"]), name
        loss = t["loss"]
        assert (loss["s"], loss["m"], loss["k"], loss["gamma_neg"], loss["gamma_pos"]) == (
            config["s"], config["m"], config["k"], config["gamma_neg"], config["gamma_pos"])
        assert t["early_stopping"]["patience"] == config["patience"]
        assert load_recipe(name)["data"]["batch_size"] == 84
        assert t == load_recipe("aam_coco")["train"]


def _check(tmp_path, epochs_run, final_key, ema_key):
    config, data, states = load_training_fixture("aam_coco", KINDS)
    model = _model(config)
    _load(model, states["init"])
    init = _values(model)

    recipe = dict(load_recipe("aam_coco")["train"])
    recipe.update(ema_momentum=config["ema_decay"], metrics=[], tensorboard=False,
                  jit_compile=keras.backend.backend() == "jax")
    ds = tf.data.Dataset.from_tensor_slices((data["x"], data["y"]))
    record, history = fit_epochs(model, ds, recipe, tmp_path, epochs_run)
    steps = epochs_run * config["steps_per_epoch"]
    np.testing.assert_allclose(record.losses(), data["loss"][:steps], rtol=1e-4)

    got = {"final": _values(model)}
    with history.ema.swapped():
        got["ema"] = _values(model)
    n = {8: 8 * 16 * 16, 16: 8 * 8 * 8}  # B * H * W per BatchNorm (channels -> n)
    for kind, key in (("final", final_key), ("ema", ema_key)):
        # two moving-statistics updates per step (both SAM passes); the EMA follows each step
        left = initial_variance_left(steps, updates_per_step=2,
                                     ema_decay=config["ema_decay"] if kind == "ema" else None)
        ref = {name: states[key][name] for name in got[kind]}
        assert_update_close(got[kind], ref, init, steps, config["lr"], kind,
                            bn_correction=biased_variance(n, left))


def test_aam_recipe_matches_official_loop(tmp_path):
    """All 120 SAM steps (TensorFlow)."""
    _check(tmp_path, 60, "final", "ema")


def test_aam_early_stopping_matches_official():
    """The official stop epoch on the fixture's scores (warm-up flags of the official run)."""
    from keras_mld.training.fit import onecycle_warmup_epochs

    config, data, _ = load_training_fixture("aam_coco", ())
    recipe = {**load_recipe("aam_coco")["train"]}
    warmup = onecycle_warmup_epochs(recipe, config["steps_per_epoch"])
    flags = data["warmup_finished"]
    assert [e + 1 >= warmup for e in range(len(flags))] == list(flags)
    stopping = dict(recipe["early_stopping"])
    stopping.pop("after_warmup")
    rule = EarlyStoppingRule(**stopping, warmup_epochs=warmup)
    stop = -1
    for epoch, score in enumerate(data["scores"]):
        if rule.update(score)[0]:
            stop = epoch
            break
    assert stop == int(data["stop_epoch"]) and stop > 0
    # counted from the start, the drop during the warm-up would have stopped it earlier
    early = EarlyStoppingRule(**stopping)
    assert next(e for e, s in enumerate(data["scores"]) if early.update(s)[0]) < stop


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the first epoch, for the JAX "
                    "run of tests/test_jax_backend.py")
def test_aam_recipe_first_epoch(tmp_path):
    _check(tmp_path, 1, "first", "first_ema")


def test_aam_options_refuse_bad_combinations(tmp_path):
    config, data, _ = load_training_fixture("aam_coco", ())
    ds = tf.data.Dataset.from_tensor_slices((data["x"], data["y"]))
    base = {**load_recipe("aam_coco")["train"], "metrics": [], "tensorboard": False}
    for change, match in (({"optimizer": "sgd", "ema_mode": "optimizer", "cycle_momentum": False},
                           "nbd needs"),
                          ({"bias_lr_factor": 3.0}, "nbd sets"),
                          ({"sam_rho": None}, "sam_second_pass_state needs"),
                          ({"schedule": "constant"}, "after_warmup needs")):
        with pytest.raises(ValueError, match=match):
            fit(_model(config), ds, ds, recipe={**base, **change},
                run_dir=str(tmp_path / match.split()[0]), verbose=0)
