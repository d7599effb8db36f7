"""Multi-hot labels stored by row (``MultiHotLabels``): the dense matrix's reads against a
numpy reference, and the loaders' memory on a file of 20,000 images over 10,000 classes
(a dense float32 matrix: 800 MB) bounded by a small multiple of the file (tracemalloc)."""
import json
import tracemalloc

import numpy as np
import pytest

from keras_mld.data import load_coco, load_csv
from keras_mld.data.multi_hot import MultiHotLabels

ROWS, CLASSES = 20_000, 10_000


def test_reads_like_the_dense_matrix():
    rng = np.random.default_rng(0)
    dense = (rng.random((37, 11)) < 0.2).astype(np.float32)
    dense[5] = 0
    labels = MultiHotLabels.from_dense(dense)
    assert labels.shape == dense.shape and labels.dtype == np.float32 and len(labels) == 37
    np.testing.assert_array_equal(np.asarray(labels), dense)
    assert labels.tolist() == dense.tolist()
    for i in (0, 5, 36, -1):
        np.testing.assert_array_equal(labels[i], dense[i])
    mask = rng.random(37) < 0.5
    for key in (slice(3, 30, 4), [4, 4, 0, 36], np.array([], int), mask):
        picked = labels[key]
        assert isinstance(picked, MultiHotLabels)
        np.testing.assert_array_equal(np.asarray(picked), dense[key])
    assert labels[3, 7] == dense[3, 7]
    np.testing.assert_array_equal(labels[2:9, 1:4], dense[2:9, 1:4])
    np.testing.assert_array_equal(labels.any(axis=1), dense.any(axis=1))
    np.testing.assert_array_equal(labels.any(axis=0), dense.any(axis=0))
    np.testing.assert_array_equal(labels.sum(axis=1), dense.sum(axis=1))
    np.testing.assert_array_equal(labels.sum(axis=0), dense.sum(axis=0))
    assert labels.sum() == dense.sum()
    rows = MultiHotLabels.from_rows([[3, 1, 3], [], [0]], 4)  # duplicates count once
    np.testing.assert_array_equal(rows, [[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]])
    with pytest.raises(IndexError):
        labels[37]
    with pytest.raises(ValueError, match="class indices"):
        MultiHotLabels([0, 1], [4], 4)


def _peak(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _expected_columns():
    """Row i holds class ``label{i % CLASSES}``; columns are the sorted names' order."""
    names = sorted(f"label{j}" for j in range(CLASSES))
    column = {name: j for j, name in enumerate(names)}
    return names, np.array([column[f"label{i % CLASSES}"] for i in range(ROWS)])


def test_a_csv_of_20000_rows_over_10000_classes_costs_about_its_size(tmp_path):
    path = tmp_path / "many.csv"
    path.write_text("".join(f"{i}.jpg,label{i % CLASSES}\n" for i in range(ROWS)))
    size = path.stat().st_size
    source, peak = _peak(lambda: load_csv(path))
    names, columns = _expected_columns()
    assert source.labels.shape == (ROWS, CLASSES) and list(source.class_names) == names
    np.testing.assert_array_equal(source.labels.row_lengths(), 1)
    np.testing.assert_array_equal(source.labels.indices, columns)
    for i in (0, 1, 9_999, 19_999):  # dense rows against the one-hot reference
        np.testing.assert_array_equal(source.labels[i], np.eye(CLASSES)[columns[i]])
    # measured 13x (mostly the 20,000 absolute path strings, ~100 bytes each, and the
    # 10,000 class names); the dense matrix alone: 4 * ROWS * CLASSES = 800 MB, 2000x
    assert peak < 20 * size, (peak, size)


def test_a_coco_file_of_20000_images_over_10000_categories_costs_about_its_size(tmp_path):
    data = {"categories": [{"id": j, "name": f"c{j}"} for j in range(CLASSES)],
            "images": [{"id": i, "file_name": f"{i}.jpg"} for i in range(ROWS)],
            "annotations": [{"id": i, "image_id": i, "category_id": i % CLASSES}
                            for i in range(ROWS)]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data, separators=(",", ":")))
    size = path.stat().st_size
    source, peak = _peak(lambda: load_coco(path))
    assert source.labels.shape == (ROWS, CLASSES)
    np.testing.assert_array_equal(source.labels.indices, np.arange(ROWS) % CLASSES)
    np.testing.assert_array_equal(source.labels[12_345], np.eye(CLASSES)[2_345])
    assert peak < 20 * size, (peak, size)  # measured 12x (the parsed JSON); dense: 400x
