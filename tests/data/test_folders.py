"""load_image_folder: class ids from sub-folders, file discovery, errors, pixels."""
import os

import numpy as np
import pytest
from PIL import Image

from keras_mld.data import load_image_folder, make_dataset

pytestmark = pytest.mark.tf_only


def _tree(tmp_path):
    rng = np.random.default_rng(2)
    arrays = {}
    for rel in ["cat/1.png", "cat/sub/2.PNG", "dog/3.png", "dog/.hidden.png",
                "ant/4.bmp"]:
        os.makedirs(tmp_path / os.path.dirname(rel), exist_ok=True)
        a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(a).save(tmp_path / rel, format="BMP" if rel.endswith("bmp") else "PNG")
        arrays[rel] = a
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / ".git").mkdir()
    return arrays


def test_classes_labels_and_pixels(tmp_path):
    arrays = _tree(tmp_path)
    source = load_image_folder(tmp_path)
    assert source.task == "singlelabel"
    assert source.class_names == ("ant", "cat", "dog")
    rels = ["ant/4.bmp", "cat/1.png", "cat/sub/2.PNG", "dog/3.png"]
    assert source.paths == tuple(str(tmp_path / r) for r in rels)
    np.testing.assert_array_equal(source.labels, [0, 1, 1, 2])
    batches = list(make_dataset(source, 8, 3, check_cache=False))
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, [0, 1, 1, 2])
    np.testing.assert_array_equal(x, np.stack([arrays[r] for r in rels]).astype(np.float32))


def test_explicit_classes_and_errors(tmp_path):
    _tree(tmp_path)
    source = load_image_folder(tmp_path, class_names=["dog", "cat"])
    np.testing.assert_array_equal(source.labels, [0, 1, 1])
    with pytest.raises(ValueError, match="bee"):
        load_image_folder(tmp_path, class_names=["bee"])
    with pytest.raises(ValueError, match="nowhere"):
        load_image_folder(tmp_path / "nowhere")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(tmp_path / "empty")
