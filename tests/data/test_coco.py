"""load_coco: labels, class order, empty images, errors; round trip through make_dataset."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from keras_mld.data import load_coco, make_dataset

pytestmark = pytest.mark.tf_only

CATEGORIES = [{"id": 5, "name": "zebra"}, {"id": 1, "name": "person"},
              {"id": 3, "name": "car"}]  # deliberately out of id order


def _write_coco(tmp_path, annotations, image_subdir="images"):
    rng = np.random.default_rng(0)
    os.makedirs(tmp_path / image_subdir, exist_ok=True)
    images, arrays = [], []
    for i, image_id in enumerate([10, 20, 30, 40]):
        a = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        Image.fromarray(a).save(tmp_path / image_subdir / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 12,
                       "height": 12})
        arrays.append(a)
    path = tmp_path / "instances_test.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": CATEGORIES}))
    return str(path), arrays


ANNOTATIONS = [
    {"id": 1, "image_id": 10, "category_id": 1},
    {"id": 2, "image_id": 10, "category_id": 5},
    {"id": 3, "image_id": 10, "category_id": 5},  # repeated category: still 1
    {"id": 4, "image_id": 20, "category_id": 3, "iscrowd": 1},
    {"id": 5, "image_id": 40, "category_id": 1},
]  # image 30 has no annotation
EXPECTED = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 0, 0]], np.float32)


def test_labels_class_names_and_pixels_round_trip(tmp_path):
    path, arrays = _write_coco(tmp_path, ANNOTATIONS)
    source = load_coco(path, image_dir=tmp_path / "images")
    assert source.class_names == ("person", "car", "zebra")  # category-id order
    assert source.task == "multilabel"
    np.testing.assert_array_equal(source.labels, EXPECTED)
    assert source.paths == tuple(str(tmp_path / "images" / f"{i}.png") for i in (10, 20, 30, 40))
    x, y = [], []
    for images, labels in make_dataset(source, 12, 3, check_cache=False):
        x.append(images.numpy())
        y.append(labels.numpy())
    np.testing.assert_array_equal(np.concatenate(x), np.stack(arrays).astype(np.float32))
    np.testing.assert_array_equal(np.concatenate(y), EXPECTED)


def test_empty_images_kept_or_dropped(tmp_path):
    path, _ = _write_coco(tmp_path, ANNOTATIONS, image_subdir=".")
    kept = load_coco(path)  # file names relative to the json's folder by default
    assert len(kept) == 4 and not kept.labels[2].any()
    assert os.path.isfile(kept.paths[0])
    dropped = load_coco(path, drop_empty=True)
    np.testing.assert_array_equal(dropped.labels, EXPECTED[[0, 1, 3]])
    assert dropped.paths == kept.paths[:2] + kept.paths[3:]


def test_unknown_category_id_names_file_and_id(tmp_path):
    path, _ = _write_coco(tmp_path, ANNOTATIONS + [{"id": 9, "image_id": 20,
                                                      "category_id": 77}])
    with pytest.raises(ValueError, match=r"instances_test\.json.*category_id 77"):
        load_coco(path, image_dir=tmp_path / "images")


def test_other_errors_name_the_path(tmp_path):
    path, _ = _write_coco(tmp_path, [{"id": 1, "image_id": 99, "category_id": 1}])
    with pytest.raises(ValueError, match="image_id 99"):
        load_coco(path, image_dir=tmp_path / "images")
    with pytest.raises(ValueError, match="nope.json"):
        load_coco(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="no_dir"):
        load_coco(path, image_dir=tmp_path / "no_dir")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(ValueError, match="bad.json.*not a COCO"):
        load_coco(bad)
