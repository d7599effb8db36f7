"""The README's Usage block runs as printed, on a tiny COCO-format data set.

Only what needs the network or hours is substituted, each substitution checked to match
exactly once: the named backbone (ImageNet weights: a download) becomes a tiny backbone
instance without weights, and the recipe's size, batch and epochs line becomes a
seconds-long one. Everything else is the README's text.
"""
import contextlib
import io
import json
import os
import re

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.tf_only

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
SUBSTITUTIONS = [
    ('"efficientnetv2_s"', "tiny_backbone()"),
    ('weights="imagenet"', "weights=None"),
    ("SIZE, BATCH, EPOCHS = 448, 56, 40", "SIZE, BATCH, EPOCHS = 64, 16, 2"),
]


def usage_block():
    text = open(README, encoding="utf-8").read()
    section = text[text.index("## Usage\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_usage_block_runs_as_printed(tmp_path, monkeypatch):
    import tensorflow as tf

    import keras_mld
    from keras_mld import data
    from tests.support.tiny import tiny_backbone

    code = usage_block()
    for old, new in SUBSTITUTIONS:
        assert code.count(old) == 1, old
        code = code.replace(old, new)
    built = data.make_digits_dataset(tmp_path / "coco", num_train=64, num_val=32,
                                     image_size=64, seed=0)
    os.rename(built.train_annotations, tmp_path / "coco" / "instances_train2017.json")
    os.rename(built.val_annotations, tmp_path / "coco" / "instances_val2017.json")
    pngs = sorted((tmp_path / "coco").rglob("*.png"))[:2]
    image = tf.io.decode_png(tf.io.read_file(str(pngs[0])), channels=3)
    (tmp_path / "photo1.jpg").write_bytes(tf.io.encode_jpeg(image).numpy())
    (tmp_path / "photo2.png").write_bytes(pngs[1].read_bytes())
    monkeypatch.chdir(tmp_path)
    keras.utils.set_random_seed(0)
    scope = {"tiny_backbone": tiny_backbone}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md (Usage)", "exec"), scope)

    model, same, val_ds = scope["model"], scope["same"], scope["val_ds"]
    names = list(scope["train"].class_names)
    assert names[:3] == ["zero", "one", "two"] and model.class_names == names
    history = scope["history"].history
    assert len(history["val_mAP"]) == 2
    # the thresholds stored are the per-class F1 ones of the validation scores
    ys = np.concatenate([np.asarray(y) for _, y in val_ds])
    scores = np.concatenate([model.scores(model(x, training=False)) for x, _ in val_ds])
    expected = np.clip(keras_mld.metrics.tune_thresholds(ys, scores), 0, 1)
    np.testing.assert_allclose(model.thresholds, expected, rtol=1e-6)
    assert history["val_mAP"][-1] == pytest.approx(
        keras_mld.metrics.mean_average_precision(ys, scores), abs=1e-5)
    # two printed lines, one per photo, of (name, score) pairs
    lines = [line for line in out.getvalue().splitlines() if line.startswith("[")]
    assert len(lines) == 2 and all(any(n in line for n in names) for line in lines)
    # the saved model, the preset and the export carry the names and thresholds
    loaded = keras.models.load_model(tmp_path / "coco.keras", safe_mode=True)
    assert loaded.class_names == names and loaded.thresholds == model.thresholds
    assert same.thresholds == model.thresholds
    np.testing.assert_array_equal(same.predict_scores(["photo1.jpg", "photo2.png"]),
                                  model.predict_scores(["photo1.jpg", "photo2.png"]))
    meta = json.loads((tmp_path / "presets" / "coco" / "metadata.json").read_text())
    assert meta["validation"]["mAP"] == pytest.approx(
        keras_mld.metrics.mean_average_precision(ys, scores), abs=1e-5)
    served = tf.saved_model.load(str(tmp_path / "models" / "coco" / "1"))
    assert [n.decode() for n in served.signatures["metadata"]()["labels"].numpy()] == names
