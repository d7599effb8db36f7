"""Converted official ML-Decoder checkpoints (TResNet + ML-Decoder) give the PyTorch logits
(no torch needed).

The fixtures ``tests/fixtures/tresnet_mldecoder_*.npz`` were made by
``scripts/make_official_fixtures_tresnet.py`` from the official Alibaba-MIIL/ML_Decoder code
at commit 8a9e984f (``src_files/ml_decoder/ml_decoder.py`` on the official TResNet; see
``tests/models/tresnet/test_convert.py``). Tolerance: max |keras - torch| <= 1e-4 * max
|torch| (relative), on TensorFlow here and on JAX (``tests/models/test_parity_on_jax.py``).
"""
import os
import sys

import keras
import numpy as np
import pytest

from keras_mld.convert import convert_ml_decoder_checkpoint
from tests.support.official import assert_relative as _assert_close
from tests.support.official import load_tresnet_fixture as _fixture
from tests.support.pth import FakeStorage, FakeTensor, write_pth


@pytest.mark.parametrize("name,n,k", [("mldecoder_full", 8, 8), ("mldecoder_group", 10, 4)])
def test_official_ml_decoder_checkpoint(name, n, k):
    # mldecoder_full: official TResNet with first_two_layers=Bottleneck (the official
    #   TResnetL layout), layers [1,1,1,1], + official MLDecoder, N = K = 8, D = 16, 64x64;
    # mldecoder_group: official TResNet (BasicBlock layout), layers [1,1,2,1], + official
    #   MLDecoder, N = 10, K = 4 (g = 3), D = 16, non-square 64x96 (token order h, then w)
    data, state = _fixture(name)
    checkpoint = {"model": state, "idx_to_class": {i: str(c) for i, c in enumerate(data["class_names"])}}
    model, names = convert_ml_decoder_checkpoint(checkpoint, image_size=data["pixels"].shape[1:3])
    assert names == [str(c) for c in data["class_names"]]
    head = model.get_layer("ml_decoder")
    assert (head.num_classes, head.num_groups, head.embed_dim) == (n, k, 16)
    # the frozen random queries are the checkpoint's, never re-drawn, and stay frozen
    np.testing.assert_array_equal(np.asarray(head.queries.queries),
                                  state["head.decoder.query_embed.weight"])
    assert not head.queries.queries.trainable
    _assert_close(model(data["pixels"]), data["logits"])


def test_official_checkpoint_pth_without_torch(tmp_path, monkeypatch):
    # the official checkpoint layout {"model": state_dict, "idx_to_class": {...}} written as a
    # PyTorch zip file by hand (tests/support/pth.py), read with torch absent

    data, state = _fixture("mldecoder_group")
    storages, sd = [], {}
    for i, (key, value) in enumerate(state.items()):
        value = np.ascontiguousarray(value, dtype="<f4")
        storages.append(FakeStorage("FloatStorage", str(i), value.reshape(-1)))
        strides = tuple(int(s) // 4 for s in value.strides)
        sd[key] = FakeTensor(storages[-1], 0, value.shape, strides)
    names = [str(c) for c in data["class_names"]]
    pth = tmp_path / "official.pth"
    write_pth(pth, {"model": sd, "idx_to_class": dict(enumerate(names))}, storages, monkeypatch)
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a machine without torch
    model, got_names = convert_ml_decoder_checkpoint(str(pth), image_size=data["pixels"].shape[1:3])
    assert got_names == names
    _assert_close(model(data["pixels"]), data["logits"])


def test_converted_model_round_trips_through_keras_file(tmp_path):
    data, state = _fixture("mldecoder_group")
    model, _ = convert_ml_decoder_checkpoint(state, image_size=(64, 96))
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    _assert_close(loaded(data["pixels"]), data["logits"])


def test_bad_inputs_raise_clear_errors():
    data, state = _fixture("mldecoder_full")
    with pytest.raises(ValueError, match="image_size"):
        convert_ml_decoder_checkpoint(state, image_size=30)
    with pytest.raises(ValueError, match="not an official ML-Decoder"):
        convert_ml_decoder_checkpoint({k: v for k, v in state.items() if "query_embed" not in k})
    bad = dict(state)
    bad["body.conv1.0.weight"] = bad["body.conv1.0.weight"][:, :, :1]
    with pytest.raises(ValueError, match="body.conv1.conv.weight"):
        convert_ml_decoder_checkpoint(bad, image_size=64)


def test_head_sizes_are_read_from_real_weights_only():
    # a decoder declared 100,000 wide by an empty embedding, or an extra decoder layer with
    # no attention weights, is refused before anything is built
    from keras_mld.models.ml_decoder.convert import infer_head_config

    _, state = _fixture("mldecoder_group")
    p = "head.decoder."
    wide = {**state, p + "embed_standart.weight": np.zeros((100_000, 0), np.float32)}
    with pytest.raises(ValueError, match="embed_standart.weight.*non-empty"):
        infer_head_config(wide)
    extra = {**state, p + "layers.1.norm1.weight": np.ones(4, np.float32)}
    with pytest.raises(ValueError, match=r"layers.1.multihead_attn.in_proj_weight has shape \(0,\)"):
        infer_head_config(extra)
