"""Files keras-mld wrote itself and reads back (resume state, the resumed recipe, EMA
averages) and ``TF_CONFIG`` are untrusted too: damaged, hostile or foreign content is a
ValueError naming the file (or variable), never another exception."""
import json

import keras
import numpy as np
import pytest

from keras_mld.training import EMAEarlyStopping, ModelStateEMA, Query2LabelEarlyStopping, fit
from keras_mld.training.distribute import make_strategy
from keras_mld.untrusted import read_json

DAMAGED = [b"", b"{\"values\": [1.0, 2.", b"[" * 100_000, b"{\"values\": [NaN]}",
           b"{\"values\": \"12\"}", b"[1, 2]", b"{\"values\": [true]}", b"\xff\xfe\x00",
           b"{\"values\": [1e999]}"]


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.build((None, 3))
    return model


@pytest.mark.parametrize("content", DAMAGED, ids=lambda c: repr(c[:16]))
def test_a_damaged_callback_state_names_the_file(tmp_path, content):
    path = tmp_path / "early_stopping.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="EMAEarlyStopping: resume state .*early_stopping"):
        EMAEarlyStopping(patience=2, state_path=str(path)).on_train_begin()


@pytest.mark.parametrize("content", DAMAGED + [b"{\"values\": [[0.5]]}",
                                               b"{\"values\": [[0.5, NaN]]}"],
                         ids=lambda c: repr(c[:16]))
def test_a_damaged_query2label_stop_state_names_the_file(tmp_path, content):
    path = tmp_path / "q2l_stop.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="Query2LabelEarlyStopping: state .*q2l_stop"):
        Query2LabelEarlyStopping(patience=2, state_path=str(path)).on_train_begin()


def test_query2label_stop_state_round_trips(tmp_path):
    path = str(tmp_path / "q2l_stop.json")
    first = Query2LabelEarlyStopping(patience=1, state_path=path)
    first.set_model(_model())
    first.on_train_begin()
    for epoch, pair in enumerate([(0.5, 0.4), (0.6, 0.55)]):
        first.on_epoch_begin(epoch)
        first.on_epoch_end(epoch, {"val_mAP": pair[0], "val_ema_mAP": pair[1]})
    resumed = Query2LabelEarlyStopping(patience=1, state_path=path)
    resumed.on_train_begin()
    assert resumed.values == [[0.5, 0.4], [0.6, 0.55]]


def test_a_damaged_resumed_recipe_names_the_file(tmp_path):
    (tmp_path / "backup").mkdir()
    x, y = np.zeros((4, 3), np.float32), np.zeros((4, 2), np.float32)
    for content in (b"{\"lr\": Infinity}", b"{\"lr\": \"0.1\"}", b"{}", b"{" * 70,
                    json.dumps({"lr": -1.0}).encode()):
        (tmp_path / "recipe.json").write_bytes(content)
        with pytest.raises(ValueError, match=r"fit: (resume: .*recipe\.json|lr must be)"):
            fit(_model(), (x, y), recipe={"lr": "auto", "epochs": 1}, run_dir=str(tmp_path))


def test_a_damaged_backup_epoch_names_the_file(tmp_path):
    """The data-order replay of a resumed run reads Keras' ``training_metadata.json``."""
    import tensorflow as tf

    (tmp_path / "backup").mkdir()
    data = tf.data.Dataset.from_tensor_slices(
        (np.zeros((4, 3), np.float32), np.zeros((4, 2), np.float32))).batch(2)
    for content in (b"", b"{\"epoch\": -1}", b"{\"epoch\": 1.5}", b"{\"epoch\": true}",
                    b"[1]", b"{\"epoch\": 10000000000}", b"[" * 100_000):
        (tmp_path / "backup" / "training_metadata.json").write_bytes(content)
        with pytest.raises(ValueError, match=r"fit: resume: .*training_metadata\.json"):
            fit(_model(), data, recipe={"lr": 1e-3, "epochs": 1, "schedule": "constant"},
                run_dir=str(tmp_path))


def test_a_damaged_ema_state_names_the_file(tmp_path):
    path = tmp_path / "ema.npz"
    model = _model()
    good = ModelStateEMA(0.5, model=model, state_path=path)
    good.on_train_begin()
    good.on_epoch_end(0)
    data = path.read_bytes()
    for damaged in (data[:len(data) // 2], data[:40], b"PK\x03\x04" + b"\0" * 60,
                    data.replace(b"v0", b"w0")):
        path.write_bytes(damaged)
        with pytest.raises(ValueError, match="ema.npz"):
            ModelStateEMA(0.5, model=model, state_path=path).on_train_begin()


@pytest.mark.parametrize("value", ["[" * 100_000, "{\"cluster\": NaN}", "{\"cluster\":",
                                   "[]"])
def test_a_hostile_tf_config_is_a_value_error(monkeypatch, value):
    monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ValueError, match="make_strategy: TF_CONFIG"):
        make_strategy("multiworker")


def test_read_json_refuses_a_file_over_max_bytes(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"values": [0.5] * 1000}))
    assert read_json(path, "t", max_bytes=10_000)["values"][0] == 0.5
    with pytest.raises(ValueError, match=r"t: .*big\.json.* is over 100 bytes"):
        read_json(path, "t", max_bytes=100)
