"""Converted TResNets give the PyTorch logits (no torch needed).

The fixtures ``tests/fixtures/tresnet_official.npz`` / ``tresnet_timm.npz`` were made by
``scripts/make_official_fixtures_tresnet.py`` (see its docstring) from the official
Alibaba-MIIL/ML_Decoder code at commit 8a9e984f (``src_files/models/tresnet/tresnet.py``;
InPlaceABN replaced by an eval-mode CPU stand-in: BN with scale |w| + eps, then leaky ReLU /
identity) and from timm 1.0.31's TResNet: random init, random signed norm weights and
non-trivial running statistics, eval mode, seed 0, tiny depth / width. Each holds the state
dict (``param/<key>``), the input pixels (NHWC, [0, 255]) and the PyTorch logits computed on
pixels / 255.

Tolerance: max |keras - torch| <= 1e-4 * max |torch| (relative), on TensorFlow here and on
JAX (``tests/models/test_parity_on_jax.py``).
"""
import os
import sys

import numpy as np
import pytest

from keras_mld.convert import convert_tresnet, read_checkpoint
from keras_mld.models.tresnet.convert import infer_config, to_timm_layout
from tests.support.official import assert_relative as _assert_close
from tests.support.official import load_tresnet_fixture as _fixture


def test_official_tresnet_alone():
    # official TResNet, BasicBlock stages 1-2, layers [1, 2, 1, 1], width 0.125, GAP + fc
    # (10 classes), 80x80 input (stage 4 anti-aliases and average-pools an odd 5x5 map)
    data, state = _fixture("official")
    cfg = infer_config(state)
    assert cfg == {"layers": (1, 2, 1, 1), "width_factor": 0.125, "v2": False, "num_classes": 10}
    model = convert_tresnet(state, input_shape=(80, 80, 3), include_top=True)
    _assert_close(model(data["pixels"] / 255.0), data["logits"])


def test_official_norm_weights_are_inplace_abn_scales():
    # InPlaceABN scales by |w| + eps: the fixture has negative norm weights (so the parity
    # above needs the conversion), and flipping their signs changes nothing
    data, state = _fixture("official")
    norm_weights = [k for k, v in state.items() if k.startswith("body.") and k.endswith(".weight")
                    and v.ndim == 1]
    assert min(state[k].min() for k in norm_weights) < 0
    np.testing.assert_array_equal(to_timm_layout(state)["body.conv1.bn.weight"],
                                  np.abs(state["body.conv1.1.weight"]) + 1e-5)
    flipped = {k: (-v if k in norm_weights else v) for k, v in state.items()}
    model = convert_tresnet(flipped, input_shape=(80, 80, 3), include_top=True)
    _assert_close(model(data["pixels"] / 255.0), data["logits"])


def test_timm_tresnet_from_safetensors(tmp_path):
    # timm TResNet(layers=[1, 1, 1, 1], width_factor=0.2, v2=True) (stem 12 -> 8 channels),
    # timm parameter names, plain BatchNorm weights; read back from a .safetensors file
    from safetensors.numpy import save_file
    data, state = _fixture("timm")
    path = os.path.join(tmp_path, "timm.safetensors")
    # a timm state dict also has BN step counters: ignored
    save_file({**state, "body.conv1.bn.num_batches_tracked": np.array(7, np.int64)}, path)
    model = convert_tresnet(path, input_shape=(64, 64, 3), include_top=True)
    _assert_close(model(data["pixels"] / 255.0), data["logits"])


def test_bad_checkpoint_files(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no such file"):
        read_checkpoint(os.path.join(tmp_path, "missing.pth"))
    pth = os.path.join(tmp_path, "x.pth")
    open(pth, "wb").close()
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a machine without torch
    with pytest.raises(ValueError, match="not a zip archive"):  # the torch-free reader
        read_checkpoint(pth)


def test_architecture_is_read_from_real_weights_only(tmp_path):
    # the width and block counts come from non-empty weights of the right shapes: an empty
    # (2048, 0, 3, 3) stem, a real but lone 2048-wide stem, or 2,000 empty block entries are
    # refused before any model is built (each once built 12.8 GiB or 2,000 blocks)
    _, state = _fixture("timm")
    empty_stem = {**state, "body.conv1.conv.weight": np.zeros((2048, 0, 3, 3), np.float32)}
    with pytest.raises(ValueError, match=r"body.conv1.conv.weight has shape \(2048, 0, 3, 3\)"):
        infer_config(empty_stem)
    wide_stem = {**state, "body.conv1.conv.weight": np.ones((2048, 48, 3, 3), np.float32)}
    with pytest.raises(ValueError, match=r"layer1.0.conv1.conv.weight .* make it \[2048, 2048"):
        infer_config(wide_stem)
    blocks = {**state, **{f"body.layer1.{i}.x": np.zeros((0,), np.float32)
                          for i in range(1, 2000)}}
    with pytest.raises(ValueError, match="block layer1.1 has no body.layer1.1.conv1.conv.weight"):
        infer_config(blocks)
    path = os.path.join(tmp_path, "wide.npz")  # through a file: the error names it
    np.savez(path, **empty_stem)
    with pytest.raises(ValueError, match=r"cannot convert checkpoint '.*wide\.npz'.*2048, 0"):
        convert_tresnet(path, input_shape=(64, 64, 3))


def test_nonfinite_weights_and_negative_variances_are_refused_unless_allowed():
    _, state = _fixture("timm")
    nan = {**state, "body.layer2.0.conv2.conv.weight":
           np.where(np.arange(state["body.layer2.0.conv2.conv.weight"].size).reshape(
               state["body.layer2.0.conv2.conv.weight"].shape) == 5, np.nan,
               state["body.layer2.0.conv2.conv.weight"]).astype(np.float32)}
    with pytest.raises(ValueError, match="'body.layer2.0.conv2.conv.weight' holds 1 non-finite"):
        convert_tresnet(nan, input_shape=(64, 64, 3))
    var = state["body.conv1.bn.running_var"].copy()
    var[0] = -1.0
    negative = {**state, "body.conv1.bn.running_var": var}
    with pytest.raises(ValueError, match="body.conv1.bn.running_var holds 1 negative"):
        convert_tresnet(negative, input_shape=(64, 64, 3))
    model = convert_tresnet(nan, input_shape=(64, 64, 3), allow_nonfinite=True)  # explicit
    kernel = model.get_layer("body_layer2_0_conv2_conv").kernel.numpy()
    assert np.isnan(kernel).sum() == 1
