"""Converted Query2Label heads give the logits of the OFFICIAL PyTorch code.

The fixtures (tests/fixtures/q2l_*.npz) hold random official weights with non-trivial
biases, a feature map and the official eval-mode logits; they were written by
scripts/make_official_fixtures_q2l_ctran.py from SlongLiu/query2labels (commit and files
named there). No torch here. ``tests/models/test_parity_on_jax.py`` runs this file on JAX.
"""
import keras
import numpy as np
import pytest

from keras_mld.convert import (convert_query2label_state_dict, query2label_options,
                               read_state_dict)
from tests.support.helpers import to_np
from tests.support.official import FIXTURES, assert_official, compiled
from tests.support.official import load_head_fixture as load

Q2L = ["default", "nonsquare", "keep_all", "pre_norm", "enc2_dec3", "first_only_no_encoder"]


@pytest.mark.parametrize("name", Q2L)
def test_query2label_matches_official(name):
    sd, cfg, data = load(f"q2l_{name}")
    args = cfg["args"]
    head = convert_query2label_state_dict(sd, num_heads=args["nheads"],
                                          pre_norm=args["pre_norm"])
    # the options read from the weights are the official flags of the run
    assert head.keep_input_proj == args["keep_input_proj"]
    assert head.keep_first_self_attn_dec == args["keep_first_self_attn_dec"]
    assert head.keep_other_self_attn_dec == args["keep_other_self_attn_dec"]
    assert (head.num_encoder_layers, head.num_decoder_layers) == (args["enc_layers"],
                                                                  args["dec_layers"])
    assert head.pre_norm == args["pre_norm"] and head.dim == args["hidden_dim"]
    x = data["features_nchw"].transpose(0, 2, 3, 1)  # official NCHW -> NHWC
    assert_official(to_np(compiled(head)(x)), data["logits"], f"q2l_{name}")


def test_torch_free_pth_reader_gives_the_fixture_weights_and_logits():
    """q2l_default.pth: a torch.save checkpoint {"state_dict": {"module." + name: tensor}};
    the reader unwraps it and drops DataParallel's "module." prefix."""
    sd_npz, cfg, data = load("q2l_default")
    sd_pth = read_state_dict(FIXTURES / "q2l_default.pth", use_torch=False)
    assert sorted(sd_pth) == sorted(sd_npz)
    for k, v in sd_npz.items():
        np.testing.assert_array_equal(sd_pth[k], v, err_msg=k)
    head = convert_query2label_state_dict(sd_pth)  # pre_norm read from the weights
    x = data["features_nchw"].transpose(0, 2, 3, 1)
    assert_official(to_np(compiled(head)(x)), data["logits"], "q2l_default.pth")


def test_converted_head_round_trips_through_keras_file(tmp_path):
    sd, cfg, data = load("q2l_keep_all")
    head = convert_query2label_state_dict(sd, pre_norm=False)
    inp = keras.Input((None, None, cfg["args"]["channels"]))
    model = keras.Model(inp, head(inp))
    path = str(tmp_path / "q2l.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = data["features_nchw"].transpose(0, 2, 3, 1)
    assert_official(to_np(compiled(loaded)(x)), data["logits"], "q2l_keep_all .keras")


def test_converter_errors():
    sd, _, _ = load("q2l_default")
    with pytest.raises(ValueError, match="pre_norm=True"):
        convert_query2label_state_dict(sd, pre_norm=True)  # no encoder.norm in the weights
    with pytest.raises(ValueError, match="query_embed"):
        convert_query2label_state_dict({"fc.W": sd["fc.W"]})
    with pytest.raises(ValueError, match="num_heads"):
        convert_query2label_state_dict(sd, num_heads=3)
    extra = dict(sd, **{"transformer.decoder.layers.0.self_attn.in_proj_weight":
                        np.zeros((96, 32), "float32")})
    opts, _ = query2label_options(extra)
    assert opts["keep_first_self_attn_dec"] and not opts["keep_other_self_attn_dec"]
    with pytest.raises(ValueError, match="in_proj_bias"):  # a half-present block
        convert_query2label_state_dict(extra)


def test_sizes_are_read_from_real_weights_only():
    # an empty query embedding declaring 100,000 classes, or a decoder layer index without
    # its attention weights, is refused before the head is built
    fake = {"query_embed.weight": np.zeros((100_000, 0), np.float32),
            "transformer.decoder.layers.0.linear1.weight": np.ones((8, 4), np.float32)}
    with pytest.raises(ValueError, match=r"'query_embed.weight' has shape \(100000, 0\)"):
        query2label_options(fake, pre_norm=False)
    fake["query_embed.weight"] = np.ones((3, 4), np.float32)
    fake["transformer.decoder.layers.500.norm1.weight"] = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="no entry 'transformer.decoder.layers.0.multihead_attn"):
        query2label_options(fake, pre_norm=False)
