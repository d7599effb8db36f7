"""Converted C-Tran heads give the logits of the OFFICIAL PyTorch code.

The fixtures (tests/fixtures/ctran_*.npz) hold random official weights with non-trivial
biases, a feature map, label masks and the official eval-mode logits; they were written by
scripts/make_official_fixtures_q2l_ctran.py from QData/C-Tran (commit and files named
there). No torch here. ``tests/models/test_parity_on_jax.py`` runs this file on JAX.
"""
import numpy as np
import pytest

from keras_mld.convert import convert_ctran_state_dict
from tests.support.helpers import to_np
from tests.support.official import assert_official, compiled
from tests.support.official import load_head_fixture as load


@pytest.mark.parametrize("name", ["ctran_lmt", "ctran_no_lmt"])
def test_ctran_matches_official(name):
    """lmt: all labels unknown, some known, all known; no_lmt: label-mask training off
    (the official forward ignores the known labels)."""
    sd, cfg, data = load(name)
    head = convert_ctran_state_dict(sd, use_lmt=cfg["use_lmt"], num_heads=cfg["heads"])
    x = data["features_nchw"].transpose(0, 2, 3, 1)
    fwd = compiled(head)
    for mask, ref in zip(data["masks"], data["logits"]):
        known = (mask != -1).mean()
        assert_official(to_np(fwd(x, known_labels=mask)), ref, f"{name} known={known:.2f}")
    # known_labels=None: all unknown (lmt, whose first mask is all unknown); no_lmt: ignored
    assert not cfg["use_lmt"] or (data["masks"][0] == -1).all()
    assert_official(to_np(fwd(x)), data["logits"][0], f"{name} known_labels=None")


def test_ctran_unknown_state_is_folded_in():
    """The official unknown row (known_label_lt[0]) is non-zero; the Keras head has a zero
    unknown state, so the conversion adds it to every label embedding."""
    sd, _, _ = load("ctran_lmt")
    u0 = sd["known_label_lt.weight"][0]
    assert np.abs(u0).mean() > 0.01
    head = convert_ctran_state_dict(sd, use_lmt=True)
    np.testing.assert_allclose(to_np(head.label_embeddings), sd["label_lt.weight"] + u0,
                               atol=1e-6)
    np.testing.assert_allclose(to_np(head.state_embeddings),
                               sd["known_label_lt.weight"][1:] - u0, atol=1e-6)


def test_converter_errors():
    sd_c, _, _ = load("ctran_lmt")
    with pytest.raises(ValueError, match="use_lmt"):
        convert_ctran_state_dict(sd_c, use_lmt=None)
    with pytest.raises(ValueError, match="label_lt"):
        convert_ctran_state_dict({}, use_lmt=True)
    with pytest.raises(ValueError, match="not used"):
        convert_ctran_state_dict(dict(sd_c, stray=np.zeros(3)), use_lmt=True)


def test_sizes_are_read_from_real_weights_only():
    fake = {"label_lt.weight": np.ones((3, 4), np.float32),
            "self_attn_layers.0.transformer_layer.self_attn.in_proj_weight":
                np.zeros((12, 0), np.float32)}
    with pytest.raises(ValueError, match=r"in_proj_weight' has shape \(12, 0\); expected a "
                                         r"non-empty \[12, 4\]"):
        convert_ctran_state_dict(fake, use_lmt=False)
    fake["label_lt.weight"] = np.zeros((100_000, 0), np.float32)
    with pytest.raises(ValueError, match=r"'label_lt.weight' has shape \(100000, 0\)"):
        convert_ctran_state_dict(fake, use_lmt=False)
