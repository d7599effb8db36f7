"""Malformed and hostile dataset files: a ValueError naming the file (and row), paths kept
inside the dataset folder, label matrices bounded."""
import json

import numpy as np
import pytest

from keras_mld.data.coco import load_coco
from keras_mld.data.csv import load_csv
from keras_mld.data.folders import load_image_folder


def _coco(tmp_path, text):
    path = tmp_path / "instances.json"
    path.write_text(text if isinstance(text, str) else json.dumps(text))
    return path


GOOD = {"images": [{"id": 1, "file_name": "a.jpg"}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 3}],
        "categories": [{"id": 3, "name": "cat"}]}


@pytest.mark.parametrize("text, why", [
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ("[" * 70 + "]" * 70, "nested more than 64"),
    ('{"images": [{"id": Infinity, "file_name": "a"}], "categories": []}', "Infinity"),
    ('{"images": [{"id": NaN, "file_name": "a"}], "categories": []}', "NaN"),
    ({**GOOD, "annotations": ["x", "y"]}, "'annotations' must be a list of objects"),
    ({**GOOD, "images": [{"id": 1.5, "file_name": "a"}]}, "image id must be an integer"),
    ({**GOOD, "images": [{"id": 1, "file_name": ["a"]}]}, "file_name must be a string"),
    ({**GOOD, "categories": {"id": 3}}, "'categories' must be a list"),
    ([1, 2], "top level must be an object"),
    ("\xff\xfe not utf-8", "not valid JSON"),
])
def test_malformed_coco_files(tmp_path, text, why):
    path = _coco(tmp_path, text)
    if text == "\xff\xfe not utf-8":
        path.write_bytes(b"\xff\xfe\x00 not utf-8")
    with pytest.raises(ValueError, match=f"load_coco: '{path}'.*{why}"):
        load_coco(path)


def test_coco_paths_stay_inside_the_image_folder(tmp_path):
    for name in ("../../../../etc/passwd", "/etc/shadow", "a/../../x.jpg"):
        path = _coco(tmp_path, {**GOOD, "images": [{"id": 1, "file_name": name}]})
        with pytest.raises(ValueError, match=r"image 1: .*outside the dataset folder"):
            load_coco(path)
    source = load_coco(path, allow_outside_paths=True)  # explicit
    assert source.paths[0] == str(tmp_path.parent / "x.jpg")
    inside = _coco(tmp_path, {**GOOD, "images": [{"id": 1, "file_name": "sub/../a.jpg"}]})
    assert load_coco(inside).paths[0] == str(tmp_path / "a.jpg")


def test_coco_categories_are_bounded(tmp_path):
    path = _coco(tmp_path, {**GOOD, "categories": [{"id": i, "name": str(i)} for i in range(30)]})
    with pytest.raises(ValueError, match="30 categories, more than max_classes=20"):
        load_coco(path, max_classes=20)
    assert load_coco(path).labels.shape == (1, 30)


def test_malformed_csv_files(tmp_path):
    big = tmp_path / "big.csv"  # a field over the csv module's 128 KiB limit
    big.write_text("a.jpg,cat\n" + "b.jpg," + "x" * 200_000 + "\n")
    with pytest.raises(ValueError, match=r"big.csv:2: not a valid CSV row \(Error: field larger"):
        load_csv(big)
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"a\x00.jpg,cat\n")
    with pytest.raises(ValueError, match="nul.csv:1: expected a non-empty path string"):
        load_csv(nul)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"a.jpg,caf\xe9\n")
    with pytest.raises(ValueError, match="latin.csv:1: not a valid CSV row.*UnicodeDecodeError"):
        load_csv(latin)


def test_csv_paths_and_classes_are_bounded(tmp_path):
    for i, name in enumerate(("../../../../etc/passwd", "/etc/shadow")):
        path = tmp_path / f"escape{i}.csv"
        path.write_text(f"ok.jpg,cat\n{name},dog\n")
        with pytest.raises(ValueError, match=f"escape{i}.csv:2: .*outside the dataset folder"):
            load_csv(path)
    assert load_csv(path, allow_outside_paths=True).paths[1] == "/etc/shadow"
    inside = tmp_path / "inside.csv"
    inside.write_text(f"{tmp_path / 'a.jpg'},cat\n")  # absolute but inside: accepted
    assert list(load_csv(inside).paths) == [str(tmp_path / "a.jpg")]
    many = tmp_path / "many.csv"  # one new label per row: a dense rows x rows matrix
    many.write_text("".join(f"{i}.jpg,label{i}\n" for i in range(50)))
    with pytest.raises(ValueError, match="50 classes, more than max_classes=40"):
        load_csv(many, max_classes=40)
    source = load_csv(many)
    np.testing.assert_array_equal(source.labels, np.eye(50)[np.argsort(
        [f"label{i}" for i in range(50)]).argsort()])


def test_folder_class_names_stay_inside_the_root(tmp_path):
    (tmp_path / "data" / "cat").mkdir(parents=True)
    (tmp_path / "data" / "cat" / "a.png").write_bytes(b"x")
    (tmp_path / "secret").mkdir()
    for name in ("../secret", "/etc", ".", "cat/.."):
        with pytest.raises(ValueError, match="load_image_folder: .*class"):
            load_image_folder(tmp_path / "data", class_names=[name])
    assert load_image_folder(tmp_path / "data", class_names=["cat"]).labels.tolist() == [0]
