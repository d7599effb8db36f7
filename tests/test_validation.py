"""keras_mld.validation: one argument check for every layer, loss and loader; numpy scalars
accepted alike; the message names the owner, the argument, what is accepted and what came.
Also: no private copies of the checks remain, and no import cycle between layer modules."""
import ast
import pathlib

import numpy as np
import pytest

from keras_mld import validation as v

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value", [3, np.int8(3), np.int64(3), np.uint16(3)])
def test_check_int_accepts_python_and_numpy_integers_as_int(value):
    out = v.check_int("Owner", "n", value, minimum=1, maximum=3)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value, match", [
    (0, r"Owner: n must be an int in \[1, 3\], got 0"), (4, r"in \[1, 3\], got 4"),
    (True, "got True"), (np.bool_(True), "got"), (2.0, "got 2.0"), ("2", "got '2'"),
    (None, "got None")])
def test_check_int_rejects(value, match):
    with pytest.raises(ValueError, match=match):
        v.check_int("Owner", "n", value, minimum=1, maximum=3)


def test_check_int_none_allowed_and_named_in_the_message():
    assert v.check_int("O", "k", None, minimum=0, allow_none=True) is None
    with pytest.raises(ValueError, match="O: k must be None or an int >= 0, got -1"):
        v.check_int("O", "k", -1, minimum=0, allow_none=True)


@pytest.mark.parametrize("value", [0.5, np.float32(0.5), np.float64(0.5), 0, np.int32(0)])
def test_check_number_and_rate_accept_numpy_scalars(value):
    out = v.check_rate("Owner", "dropout", value)
    assert out == float(value) and type(out) is float


@pytest.mark.parametrize("value", [1.0, -0.1, float("nan"), float("inf"), True, "0.1", None])
def test_check_rate_rejects(value):
    with pytest.raises(ValueError, match=r"Owner: dropout must be a number in \[0, 1\)"):
        v.check_rate("Owner", "dropout", value)


def test_check_number_open_bounds_and_custom_text():
    assert v.check_number("L", "s", 1e-9, low=0.0, low_open=True) == 1e-9
    with pytest.raises(ValueError, match=r"L: s must be a finite number > 0\.0, got 0"):
        v.check_number("L", "s", 0, low=0.0, low_open=True)
    with pytest.raises(ValueError, match="L: k must be a number in 0..1"):
        v.check_number("L", "k", 2, low=0, high=1, accepted="a number in 0..1")


def test_check_bool_choice_seed_str_array():
    assert v.check_bool("O", "b", np.bool_(True)) is True
    for bad in (1, 0, "True", None):
        with pytest.raises(ValueError, match="O: b must be True or False"):
            v.check_bool("O", "b", bad)
    assert v.check_choice("O", "mode", "avg", ("avg", "max")) == "avg"
    with pytest.raises(ValueError, match="O: mode must be one of 'avg', 'max', got 'sum'"):
        v.check_choice("O", "mode", "sum", ("avg", "max"))
    with pytest.raises(ValueError, match="one of"):
        v.check_choice("O", "mode", ["avg"], {"avg", "max"})  # unhashable
    assert v.check_seed("O", None) is None and v.check_seed("O", np.int64(7)) == 7
    with pytest.raises(ValueError, match="seed must be None or an int"):
        v.check_seed("O", 1.5)
    assert v.check_str("O", "name", "x") == "x"
    with pytest.raises(ValueError, match="non-empty string"):
        v.check_str("O", "name", "")
    a = v.check_float_array("O", "g", [[1, 2]], 2)
    assert a.dtype == np.float32 and a.shape == (1, 2)
    for bad, match in (([1, 2], "rank-2"), ([[np.nan]], "non-finite"), ("x", "float array")):
        with pytest.raises(ValueError, match=match):
            v.check_float_array("O", "g", bad, 2)


def test_check_divisible_names_both_arguments_or_the_constant():
    assert v.check_divisible("L", "hidden_dim", 8, 2, "num_heads") == 8
    with pytest.raises(ValueError, match="L: hidden_dim must be divisible by num_heads, got "
                                         "hidden_dim=10, num_heads=4"):
        v.check_divisible("L", "hidden_dim", 10, 4, "num_heads")
    with pytest.raises(ValueError, match="L: num_channels must be a multiple of 4, got 6"):
        v.check_divisible("L", "num_channels", 6, 4)


def test_check_token_width_takes_the_channels_or_a_projected_width():
    args = ("hidden_dim", False, "keep_input_proj=True", 2)
    assert v.check_token_width("H", "inputs", (None, 4, 4, 8), None, *args) == 8
    assert v.check_token_width("H", "inputs", (None, 16, 8), 8, *args) == 8
    assert v.check_token_width("H", "inputs", (None, 16, 6), 8, "hidden_dim", True, "-", 2) == 8
    for shape, width, match in (
            ((None, 8), None, "H: inputs must have rank 4 .* got shape \\(None, 8\\)"),
            ((None, 4, 4, None), None, "channel dimension of inputs must be known"),
            ((None, 16, 6), 8, "hidden_dim=8 differs from the channels of inputs \\(6\\): "
                               "pass keep_input_proj=True or hidden_dim=None"),
            ((None, 16, 3), None, "hidden_dim \\(None: the channels of inputs\\) must be "
                                  "divisible by num_heads, got .*=3, num_heads=2")):
        with pytest.raises(ValueError, match=match):
            v.check_token_width("H", "inputs", shape, width, *args)
    assert v.check_token_width("H", "inputs", (None, 16, 3), None, "hidden_dim", False, "-",
                               3) == 3


@pytest.mark.parametrize("cls, kwargs", [
    ("Query2LabelHead", dict(
        num_classes=np.int64(4), hidden_dim=np.int32(8), num_heads=np.int64(2),
        ff_dim=np.int64(16), num_encoder_layers=np.int64(0), num_decoder_layers=np.int8(1),
        dropout=np.float32(0.0), temperature=np.float64(100.0), pre_norm=np.bool_(True))),
    ("CTranHead", dict(
        num_classes=np.int64(4), embed_dim=np.int32(8), num_layers=np.int64(1),
        num_heads=np.int64(2), ff_dim=np.int16(8), dropout=np.float32(0.1),
        input_proj=np.bool_(True))),
    ("SinePositionalEncoding2D", dict(num_channels=np.int64(8), temperature=np.int32(20),
                                      normalize=np.bool_(False))),
    ("TransformerDecoderLayer", dict(hidden_dim=np.int64(8), num_heads=np.int64(2),
                                     ff_dim=np.int64(16), self_attention=np.bool_(False))),
    ("TransformerEncoderLayer", dict(hidden_dim=np.int64(8), num_heads=np.int64(2),
                                     ff_dim=np.int64(16), dropout=np.float64(0.2))),
])
def test_query2label_ctran_positional_take_numpy_scalars(cls, kwargs):
    import json

    from keras_mld.layers import positional, transformer
    from keras_mld.models.ctran import ctran
    from keras_mld.models.query2label import query2label

    owner = next(getattr(m, cls) for m in (ctran, positional, transformer, query2label)
                 if hasattr(m, cls))
    config = owner(**kwargs).get_config()
    json.dumps(config)  # plain Python values only
    for key in kwargs:
        assert type(config[key]) in (int, float, bool), (key, type(config[key]))


@pytest.mark.parametrize("cls, kwargs, match", [
    ("Query2LabelHead", dict(num_classes=4, temperature=0),
     r"Query2LabelHead: temperature must be a finite number > 0\.0, got 0"),
    ("Query2LabelHead", dict(num_classes=4, num_heads=0),
     r"Query2LabelHead: num_heads must be an int >= 1, got 0"),
    ("CTranHead", dict(num_classes=4, embed_dim=10, num_heads=4),
     "CTranHead: embed_dim must be divisible by num_heads, got embed_dim=10, num_heads=4"),
    ("CTranHead", dict(num_classes=4, dropout=1.0),
     r"CTranHead: dropout must be a number in \[0, 1\), got 1.0"),
    ("SinePositionalEncoding2D", dict(num_channels=6),
     "SinePositionalEncoding2D: num_channels must be a multiple of 4, got 6"),
    ("SinePositionalEncoding2D", dict(num_channels=2),
     "SinePositionalEncoding2D: num_channels must be None or an int >= 4, got 2"),
    ("SinePositionalEncoding2D", dict(normalize=1),
     "SinePositionalEncoding2D: normalize must be True or False, got 1"),
])
def test_query2label_ctran_positional_messages(cls, kwargs, match):
    import keras_mld.layers as layers

    with pytest.raises(ValueError, match=match):
        getattr(layers, cls)(**kwargs)


def test_numpy_integers_reach_get_config_as_python_ints():
    import json

    from keras_mld.layers import GlobalPoolHead, MLDecoder

    layer = MLDecoder(num_classes=np.int64(6), num_groups=np.int32(3), embed_dim=np.int64(8),
                      num_heads=np.int64(2), ff_dim=np.int64(16), dropout=np.float32(0.0))
    config = layer.get_config()
    json.dumps(config)  # numpy scalars would not serialise
    assert config["num_classes"] == 6 and type(config["num_classes"]) is int
    assert GlobalPoolHead(np.int64(4)).get_config()["num_classes"] == 4


def _modules(folder):
    return sorted(p for p in (ROOT / "keras_mld" / folder).rglob("*.py")
                  if p.name != "__init__.py")


def test_no_private_copies_of_the_checks():
    offenders = []
    for folder in ("layers", "losses", "data", "models"):
        for path in _modules(folder):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef) and node.name in (
                        "_check_int", "_check_number", "_check_bool", "_check_rate",
                        "_check_seed", "_check_heads", "_is_int"):
                    offenders.append(f"{path.name}:{node.lineno} {node.name}")
    assert not offenders, offenders


def test_check_number_refuses_an_int_too_large_for_a_float():
    from keras_mld.validation import check_number

    with pytest.raises(ValueError, match="lr"):
        check_number("X", "lr", 10 ** 400)
