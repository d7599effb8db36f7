"""TorchAdam / TorchSGD and OneCycleMomentum against PyTorch's own optimizers and
``OneCycleLR`` (fixture written by ``scripts/make_torch_optimizer_fixtures.py``)."""
import json

import keras
import numpy as np
import pytest

from keras_mld.training.schedules import OneCycle, OneCycleMomentum
from keras_mld.training.torch_optimizers import TorchAdam, TorchSGD
from tests.support.official import FIXTURES


def _fixture():
    with np.load(FIXTURES / "torch_optimizers.npz") as z:
        data = {k: z[k] for k in z.files}
    return json.loads(str(data.pop("config"))), data


CONFIG, DATA = _fixture()


def _optimizer(name):
    case = CONFIG["cases"][name]
    steps, pct = CONFIG["steps"], CONFIG["pct_start"]
    lr = OneCycle(CONFIG["max_lr"], steps, pct_start=pct)
    mom = OneCycleMomentum(steps, pct_start=pct)
    if case["opt"] == "SGD":
        return TorchSGD(lr, momentum=mom, nesterov=case["kw"].get("nesterov", False),
                        weight_decay=case["wd"]), case
    return TorchAdam(lr, beta_1=mom, epsilon=case["kw"]["eps"], weight_decay=case["wd"],
                     decoupled=case["opt"] == "AdamW"), case


@pytest.mark.parametrize("name", sorted(CONFIG["cases"]))
def test_matches_torch_step_for_step(name):
    opt, case = _optimizer(name)
    d = {k.split("/", 1)[1]: v for k, v in DATA.items() if k.startswith(name + "/")}
    w, b = keras.Variable(d["w0"]), keras.Variable(d["b0"])
    opt.exclude_from_weight_decay(var_list=[b])
    opt.set_lr_multipliers([(w, case["lr_factor"])])
    for t in range(CONFIG["steps"]):
        np.testing.assert_allclose(float(opt.learning_rate), d["lr"][t], rtol=1e-5)
        g = d["grads"][t]
        opt.apply([g[:12].reshape(3, 4), g[12:]], [w, b])
        scale_w = np.abs(d["w"][t] - d["w0"]).max()
        np.testing.assert_allclose(keras.ops.convert_to_numpy(w), d["w"][t], rtol=0,
                                   atol=1e-5 * scale_w, err_msg=f"{name} step {t}")
        np.testing.assert_allclose(keras.ops.convert_to_numpy(b), d["b"][t], rtol=0,
                                   atol=1e-5 * np.abs(d["b"][t] - d["b0"]).max())


def test_momentum_schedule_matches_torch():
    mom = OneCycleMomentum(CONFIG["steps"], pct_start=CONFIG["pct_start"])
    ref = DATA["adam_coupled/momentum"]
    got = [float(mom(t)) for t in range(CONFIG["steps"])]
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_config_round_trip_and_errors():
    opt, _ = _optimizer("adam_coupled")
    again = TorchAdam.from_config(opt.get_config())
    assert isinstance(again.beta_1, OneCycleMomentum) and again.l2 == opt.l2
    sgd = TorchSGD.from_config(_optimizer("sgd")[0].get_config())
    assert isinstance(sgd.momentum, OneCycleMomentum)
    with pytest.raises(ValueError, match="weight_decay"):
        TorchAdam(weight_decay=-1.0)
    with pytest.raises(ValueError, match="beta_1"):
        TorchAdam(beta_1=1.0)
    with pytest.raises(ValueError, match="use_ema"):
        TorchSGD(use_ema=True)
    with pytest.raises(ValueError, match="base_momentum"):
        OneCycleMomentum(10, base_momentum=1.5)


@pytest.mark.parametrize("name", sorted(CONFIG["plateau"]))
def test_reduce_lr_on_plateau_matches_torch(name):
    from keras_mld.training.plateau import TorchReduceLROnPlateau

    metrics, ref = DATA[f"plateau/{name}/metrics"], DATA[f"plateau/{name}/lr"]
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(TorchSGD(0.1), loss="mse")
    cb = TorchReduceLROnPlateau(monitor="val_m", **CONFIG["plateau"][name])
    cb.set_model(model)
    cb.on_train_begin()
    got = []
    for epoch, m in enumerate(metrics):
        cb.on_epoch_end(epoch, {"val_m": float(m)})
        got.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    with pytest.raises(ValueError, match="threshold_mode"):
        TorchReduceLROnPlateau(threshold_mode="relative")
