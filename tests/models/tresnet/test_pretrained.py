"""timm's TResNet weights by tag, from a stand-in Hub on 127.0.0.1 (no internet).

The served file is ``tests/fixtures/tresnet_timm.npz``'s state dict (timm's own TResNet,
layers [1, 1, 1, 1], width 0.2, v2; see ``tests/models/tresnet/test_convert.py``) written as
``model.safetensors`` in timm's layout; ``tresnet_m`` is shrunk to that configuration for the
test. The reference is the PyTorch logits stored with it.
"""
import os

import numpy as np
import pytest

import keras_mld
from keras_mld.models.tresnet import pretrained
from keras_mld.models.tresnet.tresnet import TRESNET_VARIANTS
from tests.support.fake_hub import FakeHost
from tests.support.official import assert_relative, load_tresnet_fixture

REPO = "timm/tresnet_m.miil_in21k"


def _safetensors(state):
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in state.items()})


def _left_over(root):
    """Temporary / partial files under ``root``."""
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files
            if f.startswith(".tmp") or f.endswith((".part", ".incomplete"))]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    data, state = load_tresnet_fixture("timm")
    # tresnet_m shrunk to the fixture's configuration; its in21k tag has the fixture's classes
    monkeypatch.setitem(TRESNET_VARIANTS, "tresnet_m", ((1, 1, 1, 1), 0.2, True))
    monkeypatch.setitem(pretrained.TIMM_TAGS["tresnet_m"], "miil_in21k",
                        (data["logits"].shape[1], 64))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("KERAS_MLD_CACHE_DIR", str(tmp_path / "keras_mld"))
    with FakeHost() as host:
        monkeypatch.setenv("HF_ENDPOINT", host.url)
        host.hub_file(REPO, "model.safetensors", _safetensors(state))
        host.data, host.state, host.tmp = data, state, tmp_path
        yield host


def _features(model, pixels):
    return np.asarray(model.backbone(pixels / 255.0))


def test_tags_are_timms_and_listed():
    weights = keras_mld.list_models()["weights"]
    assert weights["tresnet_m"] == ["miil_in1k", "miil_in1k_448", "miil_in21k",
                                    "miil_in21k_ft_in1k"]
    assert weights["tresnet_l"] == weights["tresnet_v2_l"] == ["miil_in21k", "miil_in21k_ft_in1k"]
    assert "tresnet_xl" not in weights and weights["resnet50"] == ["imagenet"]
    with pytest.raises(ValueError, match=r"no such weights file .miil_in1k.; tresnet_xl takes None, \[\]"):
        keras_mld.build("tresnet_xl", weights="miil_in1k")


def test_timm_classifier_from_hub_gives_the_pytorch_logits_then_works_offline(hub, monkeypatch):
    import huggingface_hub.constants

    model = keras_mld.ImageClassifier.from_preset("hf://" + REPO)
    assert model.num_classes == 10 and model.task == "singlelabel"
    assert model.image_size == (64, 64)
    assert_relative(model(hub.data["pixels"]), hub.data["logits"])  # PyTorch's logits
    hub.stop()  # the network is off: the Hub cache serves the file
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    again = keras_mld.ImageClassifier.from_preset("hf://" + REPO)
    np.testing.assert_array_equal(again(hub.data["pixels"]), model(hub.data["pixels"]))


def test_build_with_a_tag_converts_once_and_caches(hub):
    reference = keras_mld.ImageClassifier.from_preset("hf://" + REPO)
    model = keras_mld.build("tresnet_m", head="gap", num_classes=3, input_shape=(64, 64, 3),
                            weights="miil_in21k")
    n_requests = len(hub.requests)
    pixels = hub.data["pixels"]
    np.testing.assert_allclose(_features(model, pixels), _features(reference, pixels), atol=1e-5)
    cached = hub.tmp / "keras_mld" / "weights" / "timm" / "tresnet_m.miil_in21k.weights.h5"
    assert cached.is_file() and not _left_over(hub.tmp)
    hub.stop()  # a second build reads the converted weights: no request at all
    again = keras_mld.build("tresnet_m", head="gap", num_classes=3, input_shape=(64, 64, 3),
                            weights="miil_in21k")
    np.testing.assert_array_equal(_features(again, pixels), _features(model, pixels))
    assert len(hub.requests) == n_requests


def test_keys_that_do_not_match_leave_no_cache(hub):
    renamed = dict(hub.state)
    renamed["body.layer9.0.conv1.conv.weight"] = renamed.pop("body.layer1.0.conv1.conv.weight")
    hub.hub_file(REPO, "model.safetensors", _safetensors(renamed))
    with pytest.raises(ValueError, match=r"hf://timm/tresnet_m.miil_in21k.*(no entry|layer)"):
        keras_mld.build("tresnet_m", head="gap", num_classes=3, input_shape=(64, 64, 3),
                        weights="miil_in21k")
    assert not (hub.tmp / "keras_mld" / "weights").exists() or not any(
        (hub.tmp / "keras_mld" / "weights").rglob("*.h5"))
    assert not _left_over(hub.tmp)


def test_truncated_download_fails_clearly_then_resumes(hub):
    path = hub.hub_path(REPO, "model.safetensors")
    size = len(hub.files[path])
    hub.cut[path] = [size // 3] * 10  # huggingface_hub retries: every try is cut short
    with pytest.raises(ValueError, match="call again to resume"):
        keras_mld.ImageClassifier.from_preset("hf://" + REPO)
    assert not list((hub.tmp / "hf").rglob("snapshots/*/model.safetensors"))
    hub.cut[path] = []
    model = keras_mld.ImageClassifier.from_preset("hf://" + REPO)
    assert_relative(model(hub.data["pixels"]), hub.data["logits"])
    assert not _left_over(hub.tmp)


def test_offline_without_cache_says_what_to_do(hub, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"hf://timm/tresnet_m.miil_in21k.*not in the Hub "
                                         r"cache.*once online"):
        keras_mld.build("tresnet_m", head="gap", num_classes=3, input_shape=(64, 64, 3),
                        weights="miil_in21k")
