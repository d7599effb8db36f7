"""The fit recipe helper (Prokofiev & Sovrasov (arXiv:2209.06585) 3.5; ML-Decoder (Ridnik et al.,
arXiv:2111.12933) appendix C): wiring, recipe validation, files written."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mld import losses
from keras_mld.training import SAMModel, fit, make_loss

pytestmark = pytest.mark.tf_only


def _setup():
    keras.utils.set_random_seed(0)
    rs = np.random.RandomState(0)
    x = rs.rand(32, 5).astype("float32")
    y = (x @ rs.randn(5, 3) > 0).astype("float32")
    inp = keras.Input((5,))
    h = keras.layers.LayerNormalization()(keras.layers.Dense(8, activation="relu")(inp))
    model = keras.Model(inp, keras.layers.Dense(3)(h))
    return model, tf.data.Dataset.from_tensor_slices((x, y)).batch(8)


def test_no_validation_lr_auto_sgd(tmp_path):
    model, ds = _setup()
    recipe = {"epochs": 1, "lr": "auto", "optimizer": "sgd", "weight_decay": 1e-3,
              "lr_range": {"min_lr": 1e-4, "max_lr": 1e-1, "num_steps": 6},
              "loss": {"name": "asl", "gamma_neg": 2.0}, "metrics": [], "ema_momentum": None,
              "early_stopping": None, "schedule": "constant", "jit_compile": False,
              "tensorboard": False}
    hist = fit(model, ds, recipe=recipe, run_dir=str(tmp_path), verbose=0)
    assert hist.epoch == [0] and hist.model is model  # no SAM: the model itself is trained
    saved = json.load(open(tmp_path / "recipe.json"))
    assert 1e-4 <= saved["lr"] <= 1e-1
    assert sorted(os.listdir(tmp_path)) == ["final.keras", "log.csv", "recipe.json"]
    opt = model.optimizer
    assert not opt._use_weight_decay(model.layers[-1].bias)
    assert not opt._use_weight_decay(model.layers[2].gamma)  # LayerNorm
    assert opt._use_weight_decay(model.layers[-1].kernel)


def test_sam_onecycle_wiring(tmp_path):
    model, ds = _setup()
    recipe = {"epochs": 2, "lr": 0.01, "sam_rho": 0.1, "ema_momentum": 0.9, "metrics": [],
              "loss": "bce", "monitor": "val_ema_loss", "jit_compile": False,
              "tensorboard": False}
    hist = fit(model, ds, ds, recipe=recipe, run_dir=str(tmp_path), verbose=0)
    sam = hist.model
    assert isinstance(sam, SAMModel) and sam.inner_model is model and sam.rho == 0.1
    sched = sam.optimizer.learning_rate  # OneCycle over 2 epochs x 4 steps
    assert sam.optimizer._learning_rate.total_steps == 8
    assert float(sched) == pytest.approx(0.01 / 25 / 1e4, rel=1e-3)  # finished the cycle
    assert {"val_loss", "val_ema_loss"} <= set(hist.history)
    loaded = keras.models.load_model(tmp_path / "best.keras", safe_mode=True)
    assert type(loaded).__name__ == "Functional"


def test_recipe_errors(tmp_path):
    model, ds = _setup()
    with pytest.raises(ValueError, match="unknown recipe keys"):
        fit(model, ds, recipe={"learning_rate": 0.1}, run_dir=str(tmp_path))
    with pytest.raises(ValueError, match="optimizer"):
        fit(model, ds, recipe={"optimizer": "rmsprop", "metrics": []}, run_dir=str(tmp_path))
    with pytest.raises(ValueError, match="ema_momentum"):
        fit(model, ds, ds, recipe={"monitor": "val_ema_mAP", "ema_momentum": None},
            run_dir=str(tmp_path))


def test_jit_compile_auto_means_xla_only_where_a_gpu_is():
    from keras_mld.training.fit import DEFAULT_RECIPE, resolve_jit_compile

    assert DEFAULT_RECIPE["jit_compile"] == "auto"
    assert resolve_jit_compile("auto") is bool(tf.config.list_physical_devices("GPU"))
    assert resolve_jit_compile(True) is True and resolve_jit_compile(False) is False
    with pytest.raises(ValueError, match="jit_compile must be True, False or 'auto', got 'yes'"):
        resolve_jit_compile("yes")


def test_make_loss():
    assert isinstance(make_loss({"name": "asl", "gamma_neg": 2.0}), losses.AsymmetricLoss)
    assert isinstance(make_loss("aam"), losses.AAMLoss)
    assert isinstance(make_loss("bce"), keras.losses.BinaryCrossentropy)
    with pytest.raises(ValueError, match="loss"):
        make_loss({"name": "nope", "x": 1})


def test_default_recipe_logs_the_exact_val_map_every_epoch(tmp_path):
    """val_mAP by default (recipe metrics ["mAP"]): in the history (= progress bar),
    log.csv and TensorBoard, every epoch; after the last epoch it equals the numpy mAP of
    the model's scores on the validation data."""
    import csv

    from keras_mld.metrics import mean_average_precision

    model, ds = _setup()
    recipe = {"epochs": 2, "lr": 0.01, "ema_momentum": None, "early_stopping": None,
              "loss": "bce", "jit_compile": False, "tensorboard": True}
    hist = fit(model, ds, ds, recipe=recipe, run_dir=str(tmp_path), verbose=0)
    assert len(hist.history["val_mAP"]) == 2
    y = np.concatenate([b for _, b in ds])
    logits = np.concatenate([keras.ops.convert_to_numpy(model(a)) for a, _ in ds])
    assert hist.history["val_mAP"][-1] == pytest.approx(mean_average_precision(y, logits),
                                                        abs=1e-6)
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["val_mAP"]) for r in rows] == pytest.approx(hist.history["val_mAP"])
    tags = []
    for root, _, files in os.walk(tmp_path / "tensorboard" / "validation"):
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                tags += [v.tag for v in event.summary.value]
    assert tags.count("epoch_mAP") == 2


def test_torch_semantics_model_state_ema_and_max_selection(tmp_path):
    model, ds = _setup()
    recipe = {"epochs": 2, "lr": 0.01, "optimizer": "torch_adam", "weight_decay": 1e-2,
              "cycle_momentum": True, "ema_momentum": 0.5, "ema_mode": "model_state",
              "loss": {"name": "asl", "stop_focal_gradient": True, "reduction": "sum"},
              "monitor": "val_max_mAP", "early_stopping": None, "jit_compile": False,
              "tensorboard": False}
    hist = fit(model, ds, ds, recipe=recipe, run_dir=str(tmp_path), verbose=0)
    h = hist.history
    for raw, ema, best in zip(h["val_mAP"], h["val_ema_mAP"], h["val_max_mAP"]):
        assert best == pytest.approx(max(raw, ema))
    assert (tmp_path / "best.keras").exists() and (tmp_path / "final_ema.keras").exists()
    opt = model.optimizer
    assert type(opt).__name__ == "TorchAdam" and not opt.decoupled and opt.l2 == 1e-2
    assert not opt._use_weight_decay(model.layers[-1].bias)
    assert float(opt.beta_1(0)) == pytest.approx(0.95)  # OneCycle momentum cycling
    final_ema = keras.models.load_model(tmp_path / "final_ema.keras", safe_mode=True)
    with hist.ema.swapped():
        for a, b in zip(final_ema.variables, model.variables):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                          keras.ops.convert_to_numpy(b))
    with pytest.raises(ValueError, match="ema_mode"):
        fit(model, ds, recipe={**recipe, "ema_mode": "weights"}, run_dir=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="keeps no EMA"):
        fit(model, ds, recipe={**recipe, "ema_mode": "optimizer"},
            run_dir=str(tmp_path / "y"))


def test_mixed_precision_recipe_key(tmp_path, monkeypatch):
    """``mixed_precision``: ``auto`` = mixed_float16 where a GPU is present, float32 on a CPU;
    forced here on the CPU: the model built in the scope computes in float16, keeps float32
    weights, the optimizer is Keras' LossScaleOptimizer (dynamic loss scaling), the loss is
    finite; a model built in another policy is refused."""
    from keras_mld.training import mixed_precision_scope, resolve_mixed_precision

    assert resolve_mixed_precision(None) is None
    assert resolve_mixed_precision("auto") == "float32"  # no GPU here
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else [])
    assert resolve_mixed_precision("auto") == "mixed_float16"
    monkeypatch.undo()
    with pytest.raises(ValueError, match="mixed_precision"):
        resolve_mixed_precision("float16")

    recipe = {"optimizer": "torch_adam", "lr": 1e-3, "epochs": 3, "ema_momentum": None,
              "schedule": "onecycle", "cycle_momentum": True, "metrics": [], "monitor": "loss",
              "early_stopping": None, "tensorboard": False, "jit_compile": False,
              "mixed_precision": "mixed_float16"}
    before = keras.config.dtype_policy().name
    with mixed_precision_scope(recipe) as policy:
        assert policy == "mixed_float16"
        model, ds = _setup()
    assert keras.config.dtype_policy().name == before  # restored
    assert model.layers[1].compute_dtype == "float16"
    history = fit(model, ds, recipe=recipe, run_dir=str(tmp_path / "mp"), verbose=0)
    assert isinstance(history.model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert np.isfinite(history.history["loss"][0])
    assert all(v.dtype == "float32" for v in model.weights)
    # the float32 model of _setup() under a mixed recipe: refused, naming the fix
    model32, ds = _setup()
    with pytest.raises(ValueError, match="mixed_precision_scope"):
        fit(model32, ds, recipe=recipe, run_dir=str(tmp_path / "bad"), verbose=0)
