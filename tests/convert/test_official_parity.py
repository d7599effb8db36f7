"""Converted Query2Label and C-Tran heads give the logits of the OFFICIAL PyTorch code.

The fixtures (tests/fixtures/q2l_*.npz, ctran_*.npz) hold random official weights with
non-trivial biases, a feature map and the official eval-mode logits; they were written by
scripts/make_official_fixtures_q2l_ctran.py from SlongLiu/query2labels and QData/C-Tran
(commits and files named there). No torch here. This file runs on the backend of the
process; ``test_parity_on_jax`` runs it again on JAX in a subprocess.
"""
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_mld.convert import (convert_ctran_state_dict, convert_query2label_state_dict,
                               query2label_options, read_state_dict)
from tests.helpers import to_np

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
Q2L = ["default", "nonsquare", "keep_all", "pre_norm", "enc2_dec3", "first_only_no_encoder"]
RTOL = 1e-4  # relative to the largest official logit


def load(name):
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as z:
        sd = {k[3:]: z[k] for k in z.files if k.startswith("sd/")}
        rest = {k: z[k] for k in z.files if not k.startswith("sd/")}
    return sd, json.loads(str(rest.pop("config"))), rest


def compiled(layer):
    """``layer(x, **kw)`` in inference mode; on JAX one jitted ``stateless_call``."""
    if keras.backend.backend() != "jax":
        return lambda *a, **kw: layer(*a, training=False, **kw)
    import jax

    fn = jax.jit(lambda tv, ntv, a, kw: layer.stateless_call(tv, ntv, *a, training=False,
                                                             **kw)[0])
    return lambda *a, **kw: fn([v.value for v in layer.trainable_variables],
                               [v.value for v in layer.non_trainable_variables], a, kw)


def assert_official(out, ref, label):
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    scale = np.abs(ref).max()
    diff = np.abs(out - ref).max()
    print(f"{label} [{keras.backend.backend()}]: max |keras - official| = {diff:.2e} "
          f"(max |official| = {scale:.2f})")
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=RTOL * scale, err_msg=label)


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


def test_torch_free_pth_reader_gives_the_fixture_weights_and_logits():
    """q2l_default.pth: a torch.save checkpoint {"state_dict": {"module." + name: tensor}}."""
    sd_npz, cfg, data = load("q2l_default")
    sd_pth = read_state_dict(FIXTURES / "q2l_default.pth", use_torch=False)
    assert sorted(k[len("module."):] for k in sd_pth) == sorted(sd_npz)
    for k, v in sd_npz.items():
        np.testing.assert_array_equal(sd_pth["module." + k], v, err_msg=k)
    head = convert_query2label_state_dict(sd_pth)  # "module." stripped, pre_norm read
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
    sd_c, _, _ = load("ctran_lmt")
    with pytest.raises(ValueError, match="use_lmt"):
        convert_ctran_state_dict(sd_c, use_lmt=None)
    with pytest.raises(ValueError, match="label_lt"):
        convert_ctran_state_dict({}, use_lmt=True)
    with pytest.raises(ValueError, match="not used"):
        convert_ctran_state_dict(dict(sd_c, stray=np.zeros(3)), use_lmt=True)


@pytest.mark.slow
@pytest.mark.tf_only  # runs this file on JAX; the JAX run itself skips this test
def test_parity_on_jax():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-o",
           "addopts=", str(pathlib.Path(__file__).relative_to(ROOT))]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    tail = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert "[jax]" in proc.stdout and " failed" not in proc.stdout, tail
    print("\n".join(line for line in proc.stdout.splitlines() if "[jax]" in line))
