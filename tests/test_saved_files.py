"""Files saved by keras-mld 0.1.0 (before the modules moved) load with the current code
(``safe_mode=True``) and give the logits they gave then.

``tests/fixtures/release_0.1.0/`` was written by ``scripts/make_release_fixtures.py`` run
with release 0.1.0: ``.keras`` files of every head (the registered class names of that
release, e.g. ``keras_mld>TransformerDecoderHead``), a TResNet backbone model compiled with
``compile()``'s defaults and trained one step (optimizer state, ASL, the mAP metric), a preset
folder, and the logits on fixed images."""
import pathlib

import keras
import numpy as np
import pytest

import keras_mld

keras_mld.layers  # noqa: B018  (the first attribute use registers every keras-mld class, as documented)
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "release_0.1.0"
with np.load(FIXTURES / "expected.npz") as _z:
    EXPECTED = {k: _z[k] for k in _z.files}
MODELS = sorted(k for k in EXPECTED if k not in ("images", "known_labels"))


def _feeds(key):
    if key == "ctran":
        return {"images": EXPECTED["images"], "known_labels": EXPECTED["known_labels"]}
    return EXPECTED["images"]


@pytest.mark.parametrize("key", MODELS)
def test_keras_file_of_release_0_1_0_loads_and_gives_the_same_logits(key):
    model = keras.models.load_model(FIXTURES / f"{key}.keras", safe_mode=True)
    assert isinstance(model, keras_mld.ImageClassifier)
    assert model.class_names == ["cat", "dog", "car", "tree", "sky"]
    assert model.thresholds[1] == (0.5 if key == "tresnet_mldecoder" else 0.25)
    np.testing.assert_allclose(np.asarray(model(_feeds(key), training=False)), EXPECTED[key],
                               rtol=1e-5, atol=1e-5)


def test_compiled_file_of_release_0_1_0_reloads_compiled():
    model = keras.models.load_model(FIXTURES / "tresnet_mldecoder.keras", safe_mode=True)
    assert isinstance(model.loss, keras_mld.losses.AsymmetricLoss)
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    assert int(model.optimizer.iterations) == 1  # the saved optimizer state came back
    assert model.get_layer("tiny_tresnet").get_layer("body_s2d").__class__.__name__ == \
        "SpaceToDepth"


def test_preset_of_release_0_1_0_loads():
    model = keras_mld.ImageClassifier.from_preset(str(FIXTURES / "preset"))
    np.testing.assert_allclose(np.asarray(model(EXPECTED["images"], training=False)),
                               EXPECTED["tresnet_mldecoder"], rtol=1e-5, atol=1e-5)
