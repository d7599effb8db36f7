"""The official ML-Decoder checkpoints as named presets, from a stand-in host on 127.0.0.1
(``KERAS_MLD_ML_DECODER_MIRROR``; no internet).

The served ``tresnet_m_COCO_224_84_2.pth`` is ``tests/fixtures/tresnet_mldecoder_full.npz``
(the official TResNet + ML-Decoder code's state dict, see ``test_convert.py``) written as the
official checkpoint ``{"model": state_dict, "idx_to_class": {...}}`` in PyTorch's zip format
(``tests/support/pth.py``); the preset's image side is shrunk to its 64. The reference is the
PyTorch logits stored with it.
"""
import os

import numpy as np
import pytest

import keras_mld
from keras_mld.models.ml_decoder import official
from tests.support.fake_hub import FakeHost
from tests.support.official import assert_relative, load_tresnet_fixture
from tests.support.pth import FakeStorage, FakeTensor, write_pth

NAME, FILE = "mldecoder_tresnet_m_coco_224", "tresnet_m_COCO_224_84_2.pth"


def _official_pth(path, monkeypatch):
    data, state = load_tresnet_fixture("mldecoder_full")
    storages, sd = [], {}
    for i, (key, value) in enumerate(state.items()):
        value = np.ascontiguousarray(value, dtype="<f4")
        storages.append(FakeStorage("FloatStorage", str(i), value.reshape(-1)))
        sd[key] = FakeTensor(storages[-1], 0, value.shape,
                             tuple(int(s) // 4 for s in value.strides))
    names = [str(c) for c in data["class_names"]]
    write_pth(path, {"model": sd, "idx_to_class": dict(enumerate(names))}, storages,
              monkeypatch)
    with open(path, "rb") as f:
        return data, names, f.read()


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    data, names, blob = _official_pth(tmp_path / "official.pth", monkeypatch)
    monkeypatch.setitem(official.OFFICIAL_CHECKPOINTS, NAME, (FILE, 64, "tiny stand-in"))
    monkeypatch.setenv("KERAS_MLD_CACHE_DIR", str(tmp_path / "cache"))
    with FakeHost() as host:
        monkeypatch.setenv(official.MIRROR_ENV, host.url + "/zoo/")
        host.files["/zoo/" + FILE] = blob
        host.data, host.names, host.cache = data, names, tmp_path / "cache"
        yield host


def _cache_files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, files in os.walk(root) for f in files)


def test_listed_with_the_official_urls():
    assert set(official.OFFICIAL_CHECKPOINTS) <= set(keras_mld.list_presets())
    assert official.official_url(FILE) == (
        "https://miil-public-eu.oss-eu-central-1.aliyuncs.com/model-zoo/ML_Decoder/" + FILE)


def test_downloaded_converted_once_then_cached(zoo):
    model = keras_mld.ImageClassifier.from_preset(NAME)
    assert model.class_names == zoo.names
    assert_relative(model(zoo.data["pixels"]), zoo.data["logits"])  # PyTorch's logits
    files = _cache_files(zoo.cache)
    assert files == [f"presets/{NAME}/{f}" for f in
                     ("config.json", "metadata.json", "model.weights.h5")]  # no download kept
    zoo.stop()  # the network is off: the cached preset is read
    again = keras_mld.ImageClassifier.from_preset(NAME)
    np.testing.assert_array_equal(again(zoo.data["pixels"]), model(zoo.data["pixels"]))
    with pytest.raises(ValueError, match="takes no build arguments"):
        keras_mld.ImageClassifier.from_preset(NAME, num_classes=3)


def test_403_names_the_url_upstream_and_the_convert_command(zoo):
    zoo.status["/zoo/" + FILE] = 403
    with pytest.raises(ValueError) as err:
        keras_mld.ImageClassifier.from_preset(NAME)
    text = str(err.value)
    assert "HTTP 403" in text and zoo.url + "/zoo/" + FILE in text
    assert "issues/87" in text and official.MIRROR_ENV in text
    assert f"keras-mld convert {FILE} --image-size 64 --out PRESET_DIR" in text
    assert _cache_files(zoo.cache) == []


def test_interrupted_download_fails_clearly_then_resumes(zoo):
    size = len(zoo.files["/zoo/" + FILE])
    zoo.cut["/zoo/" + FILE] = [size // 2]
    with pytest.raises(ValueError, match=r"(?s)interrupted after \d+ of \d+ bytes.*call again to "
                                         r"resume.*keras-mld convert"):
        keras_mld.ImageClassifier.from_preset(NAME)
    assert _cache_files(zoo.cache) == [f"downloads/{FILE}.part"]  # kept to resume, only
    model = keras_mld.ImageClassifier.from_preset(NAME)
    assert zoo.requests[-1][2] == f"bytes={size // 2}-"  # resumed where it stopped
    assert_relative(model(zoo.data["pixels"]), zoo.data["logits"])
    assert not any(f.startswith("downloads") for f in _cache_files(zoo.cache))


def test_damaged_file_is_removed_and_explained(zoo):
    blob = zoo.files["/zoo/" + FILE]
    zoo.files["/zoo/" + FILE] = blob[: len(blob) // 2] + bytes(len(blob) - len(blob) // 2)
    with pytest.raises(ValueError, match=r"(?s)damaged or not the official checkpoint.*removed.*"
                                         r"keras-mld convert"):
        keras_mld.ImageClassifier.from_preset(NAME)
    assert _cache_files(zoo.cache) == []


def test_hash_or_keys_that_do_not_match_leave_nothing(zoo, monkeypatch, tmp_path):
    monkeypatch.setitem(official.OFFICIAL_SHA256, NAME, "0" * 64)
    with pytest.raises(ValueError, match="SHA-256 is [0-9a-f]{64}, expected 0{64}"):
        keras_mld.ImageClassifier.from_preset(NAME)
    assert _cache_files(zoo.cache) == []
    monkeypatch.delitem(official.OFFICIAL_SHA256, NAME)
    # a valid PyTorch file whose keys are not an ML-Decoder checkpoint's
    data, state = load_tresnet_fixture("timm")
    value = np.ascontiguousarray(state["body.conv1.conv.weight"], dtype="<f4")
    storage = FakeStorage("FloatStorage", "0", value.reshape(-1))
    tensor = FakeTensor(storage, 0, value.shape, tuple(int(s) // 4 for s in value.strides))
    write_pth(tmp_path / "other.pth", {"model": {"body.conv1.conv.weight": tensor}}, [storage],
              monkeypatch)
    zoo.files["/zoo/" + FILE] = (tmp_path / "other.pth").read_bytes()
    with pytest.raises(ValueError, match=r"(?s)not the official checkpoint.*missing"):
        keras_mld.ImageClassifier.from_preset(NAME)
    assert _cache_files(zoo.cache) == []


def test_single_label_checkpoint_gets_softmax_scores(zoo, monkeypatch):
    name = "mldecoder_tresnet_l_stanford_cars_384"
    monkeypatch.setitem(official.OFFICIAL_CHECKPOINTS, name, (FILE, 64, "tiny stand-in"))
    model = keras_mld.ImageClassifier.from_preset(name)
    assert model.task == "singlelabel"
    logits = np.asarray(zoo.data["logits"], "float64")
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    np.testing.assert_allclose(model.predict_scores(zoo.data["pixels"]), softmax, atol=1e-4)
