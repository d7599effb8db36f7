"""``from_preset("hf://owner/repo")`` and ``upload_preset``, against a stand-in Hub on
127.0.0.1 (no internet); the reference is the saved model's own predictions."""
import os

import numpy as np
import pytest

import keras_mld
from tests.support.fake_hub import FakeHost
from tests.support.tiny import tiny_backbone

pytestmark = pytest.mark.tf_only
NAMES = ["cat", "dog", "car"]


def _preset(folder):
    model = keras_mld.build(tiny_backbone(), head="gap", class_names=NAMES,
                            input_shape=(32, 32, 3), thresholds=[0.2, 0.5, 0.7])
    model.save_to_preset(folder)
    return model


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with FakeHost() as host:
        monkeypatch.setenv("HF_ENDPOINT", host.url)
        yield host


def test_preset_published_on_the_hub_loads_with_its_names_and_weights(hub, tmp_path):
    folder = str(tmp_path / "preset")
    model = _preset(folder)
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            hub.hub_file("someone/tiny-preset", name, f.read())
    loaded = keras_mld.ImageClassifier.from_preset("hf://someone/tiny-preset")
    x = np.random.default_rng(0).uniform(0, 255, (2, 40, 48, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict_scores(x), model.predict_scores(x), atol=1e-6)
    assert loaded.class_names == NAMES and loaded.thresholds == [0.2, 0.5, 0.7]
    with pytest.raises(ValueError, match="takes no build arguments"):
        keras_mld.ImageClassifier.from_preset("hf://someone/tiny-preset", num_classes=3)


def test_missing_preset_and_other_timm_models_say_what_is_accepted(hub):
    with pytest.raises(ValueError, match=r"hf://someone/nothing.*keras-mld preset on the Hub "
                                         r"holds \['config.json'"):
        keras_mld.ImageClassifier.from_preset("hf://someone/nothing")
    with pytest.raises(ValueError, match=r"hf://timm/resnet50.a1_in1k.*TResNets only.*"
                                         r"hf://timm/tresnet_m.miil_in21k"):
        keras_mld.ImageClassifier.from_preset("hf://timm/resnet50.a1_in1k")
    with pytest.raises(ValueError, match="expected 'hf://owner/repo'"):
        keras_mld.ImageClassifier.from_preset("hf://no-owner")


def test_upload_preset_checks_the_folder_and_uploads_it(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:  # records what would go to the Hub
        def __init__(self, **kwargs):
            calls.append(("init", kwargs))

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls.append(("create_repo", repo_id, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls.append(("upload_folder", repo_id, sorted(os.listdir(folder_path))))
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    folder = str(tmp_path / "preset")
    _preset(folder)
    url = keras_mld.upload_preset(folder, "hf://me/my-preset", private=True)
    assert url == "https://hub/me/my-preset/commit/1"
    assert calls == [("init", {}), ("create_repo", "me/my-preset", True, True),
                     ("upload_folder", "me/my-preset",
                      ["config.json", "metadata.json", "model.weights.h5"])]
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("x")
    with pytest.raises(ValueError, match=r"files besides the preset's.*notes.txt"):
        keras_mld.upload_preset(folder, "hf://me/my-preset")
    with pytest.raises(ValueError, match="preset must be a preset folder"):
        keras_mld.upload_preset(str(tmp_path / "none"), "hf://me/my-preset")
    with pytest.raises(ValueError, match="expected 'hf://owner/repo'"):
        keras_mld.upload_preset(folder, "me/my-preset")
    assert len(calls) == 3  # nothing more was sent
