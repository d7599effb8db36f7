"""make_digits_dataset: reproducible, labels match the drawn digits, disjoint splits,
idempotent and atomic builds, loads through load_coco."""
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from keras_mld.data import digits
from keras_mld.data import DIGIT_NAMES, load_coco, load_source_digits, make_dataset, \
    make_digits_dataset

pytestmark = pytest.mark.tf_only
ARGS = dict(num_train=24, num_val=8, image_size=64, max_digits=4, seed=3)


def _hashes(root):
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            path = os.path.join(folder, f)
            out[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits") / "ds"
    return make_digits_dataset(root, **ARGS)


def test_reproducible_byte_identical(built, tmp_path):
    again = make_digits_dataset(tmp_path / "again", **ARGS)
    assert _hashes(built.root) == _hashes(again.root)
    other = make_digits_dataset(tmp_path / "other", **dict(ARGS, seed=4))
    assert _hashes(other.root)["instances_train.json"] \
        != _hashes(built.root)["instances_train.json"]
    assert not any(n.startswith(".") for n in os.listdir(tmp_path))  # no temp dirs left


def test_labels_match_drawn_digits_and_splits_are_disjoint(built):
    glyph_images, glyph_labels = load_source_digits()
    info = json.load(open(os.path.join(built.root, "dataset_info.json")))
    pools = {"train": set(info["train_digits"]), "val": set(info["val_digits"])}
    assert not pools["train"] & pools["val"]
    used = {}
    for split, ann_file, n in [("train", built.train_annotations, 24),
                               ("val", built.val_annotations, 8)]:
        data = json.load(open(ann_file))
        assert [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])] \
            == list(DIGIT_NAMES)
        source = load_coco(ann_file)
        assert source.class_names == DIGIT_NAMES and len(source) == n
        expected = np.zeros((n, 10), np.float32)
        for a in data["annotations"]:
            # the category is the class of the real digit drawn, from this split's pool
            assert glyph_labels[a["digit_index"]] == a["category_id"] - 1
            assert a["digit_index"] in pools[split]
            used.setdefault(split, set()).add(a["digit_index"])
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 64 and w * h > 0
            expected[a["image_id"] - 1, a["category_id"] - 1] = 1.0
        np.testing.assert_array_equal(source.labels, expected)
        counts = np.bincount([a["image_id"] for a in data["annotations"]], minlength=n + 1)[1:]
        assert counts.min() >= 1 and counts.max() <= 4
        assert 1 <= source.labels.sum(axis=1).min() and source.labels.sum(axis=1).max() <= 4
        for path in source.paths[:3]:
            with Image.open(path) as im:
                assert im.size == (64, 64) and im.mode == "RGB"
    assert not used["train"] & used["val"]
    assert glyph_images.shape[1:] == (28, 28)


def test_ink_inside_boxes(built):
    # the drawn digit changes the canvas inside its box: compare with the box's border
    data = json.load(open(built.train_annotations))
    for a in data["annotations"][:20]:
        image = np.asarray(Image.open(os.path.join(built.root, data["images"][a["image_id"] - 1]
                                                   ["file_name"])), np.float32)
        x, y, w, h = a["bbox"]
        assert image[y:y + h, x:x + w].std(axis=(0, 1)).max() > 10.0


def test_loads_through_pipeline(built):
    source = load_coco(built.val_annotations)
    images, labels = next(iter(make_dataset(source, 64, 8, check_cache=False)))
    assert images.shape == (8, 64, 64, 3) and labels.shape == (8, 10)
    first = np.asarray(Image.open(source.paths[0]), np.float32)
    np.testing.assert_array_equal(images.numpy()[0], first)


def test_idempotent_rebuild_and_refusal(built, tmp_path):
    stamp = os.stat(built.train_annotations).st_mtime_ns
    assert make_digits_dataset(built.root, **ARGS) == built
    assert os.stat(built.train_annotations).st_mtime_ns == stamp  # reused, not rewritten
    root = tmp_path / "re"
    make_digits_dataset(root, **dict(ARGS, num_train=4, num_val=2))
    make_digits_dataset(root, **dict(ARGS, num_train=5, num_val=2))  # replaces own build
    assert len(load_coco(root / "instances_train.json")) == 5
    assert sorted(os.listdir(tmp_path)) == ["re"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="refusing"):
        make_digits_dataset(foreign, **ARGS)


@pytest.mark.parametrize("kwargs, match", [
    ({"image_size": 32}, "image_size"), ({"max_digits": 0}, "max_digits"),
    ({"num_train": 0}, "num_train"), ({"seed": -1}, "seed")])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_digits_dataset(tmp_path / "x", **dict(ARGS, **kwargs))


def test_sklearn_fallback(tmp_path, monkeypatch):
    monkeypatch.setattr(digits, "_source_name", lambda: "sklearn-digits-8x8")
    images, labels = load_source_digits("sklearn-digits-8x8")
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8 and images.max() == 255
    built = make_digits_dataset(tmp_path / "sk", num_train=4, num_val=2)
    info = json.load(open(os.path.join(built.root, "dataset_info.json")))
    assert info["source"] == "sklearn-digits-8x8"
    assert len(load_coco(built.train_annotations)) == 4
