"""``keras-mld convert``: an official ML-Decoder checkpoint becomes a preset or a ``.keras``
file that ``keras-mld predict`` and ``keras-mld export`` take, with the checkpoint's class
names and the PyTorch logits (fixture: ``tests/fixtures/tresnet_mldecoder_full.npz``)."""
import os

import keras
import numpy as np
import pytest

from tests.support.official import assert_relative as _assert_close
from tests.support.official import load_tresnet_fixture as _fixture


def _cli_convert(tmp_path):
    # `keras-mld convert ckpt.npz --out folder` -> an ImageClassifier preset carrying the
    # checkpoint's class names
    from keras_mld import ImageClassifier
    from keras_mld.app.cli import main
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
    from keras_mld.app.cli import main
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
