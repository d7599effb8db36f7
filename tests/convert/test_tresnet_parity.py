"""Converted TResNet / ML-Decoder models give the PyTorch logits (no torch needed).

The fixtures ``tests/fixtures/tresnet_*.npz`` were made by
``scripts/make_official_fixtures_tresnet.py`` (see its docstring) from the official
Alibaba-MIIL/ML_Decoder code at commit 8a9e984f (``src_files/models/tresnet/tresnet.py``,
``src_files/ml_decoder/ml_decoder.py``; InPlaceABN replaced by an eval-mode CPU stand-in:
BN with scale |w| + eps, then leaky ReLU / identity) and from timm 1.0.31's TResNet:
random init, random signed norm weights and non-trivial running statistics, eval mode,
seed 0, tiny depth / width. Each holds the state dict (``param/<key>``), the input pixels
(NHWC, [0, 255]) and the PyTorch logits computed on pixels / 255.

Tolerance: max |keras - torch| <= 1e-4 * max |torch| (relative), on TensorFlow here and on
JAX in a subprocess (``test_parity_on_jax``).
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import keras

from keras_mld.convert import convert_ml_decoder_checkpoint, convert_tresnet, read_checkpoint
from keras_mld.convert.tresnet import infer_config, to_timm_layout

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
RTOL = 1e-4


def _fixture(name):
    with np.load(FIXTURES / f"tresnet_{name}.npz") as z:
        data = {k: z[k] for k in z.files}
    state = {k[len("param/"):]: v for k, v in data.items() if k.startswith("param/")}
    return data, state


def _assert_close(out, ref):
    err = np.max(np.abs(np.asarray(out, "float64") - ref)) / np.max(np.abs(ref))
    assert err <= RTOL, f"relative error {err:.2e} > {RTOL}"


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
    # PyTorch zip file by hand (tests/convert/test_state_dict.py), read with torch absent
    from tests.convert.test_state_dict import _FakeStorage, _FakeTensor, _write_pth

    data, state = _fixture("mldecoder_group")
    storages, sd = [], {}
    for i, (key, value) in enumerate(state.items()):
        value = np.ascontiguousarray(value, dtype="<f4")
        storages.append(_FakeStorage("FloatStorage", str(i), value.reshape(-1)))
        strides = tuple(int(s) // 4 for s in value.strides)
        sd[key] = _FakeTensor(storages[-1], 0, value.shape, strides)
    names = [str(c) for c in data["class_names"]]
    pth = tmp_path / "official.pth"
    _write_pth(pth, {"model": sd, "idx_to_class": dict(enumerate(names))}, storages, monkeypatch)
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


def _cli_convert(tmp_path):
    # `keras-mld convert ckpt.npz --out folder` -> an ImageClassifier preset carrying the
    # checkpoint's class names
    from keras_mld import ImageClassifier
    from keras_mld.cli import main
    data, state = _fixture("mldecoder_full")
    ckpt = os.path.join(tmp_path, "ckpt.npz")
    np.savez(ckpt, class_names=data["class_names"], **state)
    out = os.path.join(tmp_path, "coco")
    assert main(["convert", ckpt, "--out", out, "--image-size", "64"]) == 0
    loaded = ImageClassifier.from_preset(out)
    assert loaded.class_names == [str(c) for c in data["class_names"]]
    _assert_close(loaded(data["pixels"]), data["logits"])
    # never replaced silently: the CLI reports the ValueError and fails
    assert main(["convert", ckpt, "--out", out, "--image-size", "64"]) != 0
    assert main(["convert", ckpt, "--out", os.path.join(tmp_path, "m.keras"),
                 "--image-size", "64"]) == 0
    single = keras.models.load_model(os.path.join(tmp_path, "m.keras"), safe_mode=True)
    assert single.class_names == loaded.class_names
    _assert_close(single(data["pixels"]), data["logits"])
    return data, out, loaded


def test_cli_convert_writes_a_preset(tmp_path):
    _cli_convert(tmp_path)


@pytest.mark.tf_only
def test_cli_convert_then_predict_and_export(tmp_path, capsys):
    # the README path: convert -> predict photo.png --model <preset folder> -> export;
    # the scores are the converted model's, the names the checkpoint's
    import tensorflow as tf
    from PIL import Image
    from keras_mld.cli import main
    data, out, loaded = _cli_convert(tmp_path)
    pixels = np.round(data["pixels"][0]).astype("uint8")  # 64x64: no resize in predict
    photo = os.path.join(tmp_path, "photo.png")
    Image.fromarray(pixels).save(photo)
    expected = 1 / (1 + np.exp(-np.asarray(loaded(pixels[None].astype("float32")))[0]))
    capsys.readouterr()
    assert main(["predict", photo, "--model", out, "--top-k", "3", "--threshold", "0"]) == 0
    printed = capsys.readouterr().out.strip().split(": ", 1)[1].split(", ")[:3]
    best = np.argsort(-expected)[:3]
    assert [p.rsplit(" ", 1)[0] for p in printed] == [str(data["class_names"][i]) for i in best]
    np.testing.assert_allclose([float(p.rsplit(" ", 1)[1]) for p in printed], expected[best],
                               atol=1e-3)
    serving = os.path.join(tmp_path, "serving")
    assert main(["export", "--model", out, "--out", serving]) == 0
    signature = tf.saved_model.load(os.path.join(serving, "1")).signatures["serving_default"]
    scores = signature(images=tf.constant(pixels[None].astype("float32")))["scores"].numpy()[0]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)
    metadata = tf.saved_model.load(os.path.join(serving, "1")).signatures["metadata"]()
    assert [n.decode() for n in metadata["labels"].numpy()] == loaded.class_names


def test_bad_inputs_raise_clear_errors(tmp_path, monkeypatch):
    data, state = _fixture("mldecoder_full")
    with pytest.raises(ValueError, match="image_size"):
        convert_ml_decoder_checkpoint(state, image_size=30)
    with pytest.raises(ValueError, match="not an official ML-Decoder"):
        convert_ml_decoder_checkpoint({k: v for k, v in state.items() if "query_embed" not in k})
    with pytest.raises(ValueError, match="no such file"):
        read_checkpoint(os.path.join(tmp_path, "missing.pth"))
    pth = os.path.join(tmp_path, "x.pth")
    open(pth, "wb").close()
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a machine without torch
    with pytest.raises(ValueError, match="not a zip archive"):  # the torch-free reader
        read_checkpoint(pth)
    bad = dict(state)
    bad["body.conv1.0.weight"] = bad["body.conv1.0.weight"][:, :, :1]
    with pytest.raises(ValueError, match="body.conv1.conv.weight"):
        convert_ml_decoder_checkpoint(bad, image_size=64)


@pytest.mark.slow
def test_parity_on_jax():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
           # the TF-only CLI path and the big-model size / registry checks stay on TF
           "-k", "not jax and not cli and not sizes and not registered",
           "tests/convert/test_tresnet_parity.py", "tests/test_tresnet.py"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail
    assert "skipped" not in proc.stdout, tail
