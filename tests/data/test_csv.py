"""load_csv: header detection, paths, class lists, errors; round trip through make_dataset."""
import numpy as np
import pytest
from PIL import Image

from keras_mld.data import load_csv, make_dataset

pytestmark = pytest.mark.tf_only


def _images(tmp_path, names):
    rng = np.random.default_rng(1)
    (tmp_path / "imgs").mkdir(exist_ok=True)
    arrays = {}
    for name in names:
        a = rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
        Image.fromarray(a).save(tmp_path / "imgs" / name)
        arrays[name] = a
    return arrays


def test_round_trip_with_header_relative_and_absolute_paths(tmp_path):
    arrays = _images(tmp_path, ["a.png", "b,c.png", "d.png"])
    absolute = tmp_path / "imgs" / "d.png"
    (tmp_path / "labels.csv").write_text(
        "path,labels\n"
        "imgs/a.png,dog|cat\n"
        '"imgs/b,c.png",\n'          # quoted path with a comma, no label
        "\n"
        f"{absolute},bird | dog\n")
    source = load_csv(tmp_path / "labels.csv")
    assert source.class_names == ("bird", "cat", "dog")  # sorted union
    np.testing.assert_array_equal(source.labels, [[0, 1, 1], [0, 0, 0], [1, 0, 1]])
    assert source.paths == (str(tmp_path / "imgs" / "a.png"), str(tmp_path / "imgs" / "b,c.png"),
                            str(absolute))
    batches = list(make_dataset(source, (10, 14), 2, check_cache=False))
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    ref = np.stack([arrays[n] for n in ["a.png", "b,c.png", "d.png"]]).astype(np.float32)
    np.testing.assert_array_equal(x, ref)
    np.testing.assert_array_equal(y, source.labels)


def test_no_header_given_classes_and_image_dir(tmp_path):
    _images(tmp_path, ["a.png", "b.png"])
    (tmp_path / "l.csv").write_text("a.png,x\nb.png,z|x\n")
    source = load_csv(tmp_path / "l.csv", class_names=["z", "y", "x"],
                      image_dir=tmp_path / "imgs")
    assert source.class_names == ("z", "y", "x")
    np.testing.assert_array_equal(source.labels, [[0, 0, 1], [1, 0, 1]])
    assert source.paths[0] == str(tmp_path / "imgs" / "a.png")
    forced = load_csv(tmp_path / "l.csv", header=True)  # first row taken as header
    assert len(forced) == 1 and forced.class_names == ("x", "z")


def test_unknown_label_names_file_line_and_label(tmp_path):
    (tmp_path / "l.csv").write_text("path,labels\na.png,x\n\nb.png,x|w\n")
    with pytest.raises(ValueError, match=r"l\.csv:4: unknown label 'w'"):
        load_csv(tmp_path / "l.csv", class_names=["x", "y"])


def test_singlelabel_and_errors(tmp_path):
    (tmp_path / "s.csv").write_text("a.png,y\nb.png,x\n")
    source = load_csv(tmp_path / "s.csv", task="singlelabel")
    assert source.task == "singlelabel" and source.labels.dtype == np.int32
    np.testing.assert_array_equal(source.labels, [1, 0])
    (tmp_path / "t.csv").write_text("a.png,y|x\n")
    with pytest.raises(ValueError, match=r"t\.csv:1: .*exactly one label"):
        load_csv(tmp_path / "t.csv", task="singlelabel")
    (tmp_path / "u.csv").write_text("a.png,y,extra\n")
    with pytest.raises(ValueError, match=r"u\.csv:1: expected"):
        load_csv(tmp_path / "u.csv")
    with pytest.raises(ValueError, match="missing.csv"):
        load_csv(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="task"):
        load_csv(tmp_path / "s.csv", task="multiclass")
