"""keras_mld.ImageClassifier: build defaults, config round trip, compile defaults, bad input,
preprocessor, predict_labels, thresholds."""
import os

import numpy as np
import pytest
import keras

import keras_mld
from keras_mld.models import COCO_CLASS_NAMES, ImageClassifierPreprocessor
from keras_mld.training.torch_optimizers import TorchAdam
from tests.support.helpers import to_np
from tests.support.tiny import SMALL_HEAD_KWARGS, tiny_backbone

pytestmark = pytest.mark.tf_only
NAMES = ["cat", "dog", "bird", "car", "tree"]


def _model(head="mldecoder", **kwargs):
    kwargs = {"class_names": NAMES, "input_shape": (32, 32, 3), **SMALL_HEAD_KWARGS[head],
              **kwargs}
    return keras_mld.build(tiny_backbone(), head=head, **kwargs)


def _images(n=4, size=(32, 32), seed=0, dtype="float32"):
    x = np.random.default_rng(seed).uniform(0, 255, (n, *size, 3))
    return x.astype(dtype)


def test_default_build_is_the_80_class_coco_classifier():
    model = keras_mld.build("efficientnetv2_s", head="mldecoder")
    assert isinstance(model, keras_mld.ImageClassifier)
    assert model.class_names == list(COCO_CLASS_NAMES)
    assert model.num_classes == 80 and model.output_shape == (None, 80)
    assert model.class_names[0] == "person" and model.class_names[-1] == "toothbrush"
    assert model.task == "multilabel" and model.image_size == (224, 224)
    assert model.thresholds == [0.5] * 80
    assert isinstance(model.backbone, keras.Model) and isinstance(model.head, keras.Model)
    assert isinstance(model.preprocessor, ImageClassifierPreprocessor)
    assert model.get_layer("ml_decoder").num_classes == 80


def test_num_classes_from_class_names_and_default_names():
    assert _model().num_classes == 5
    m = keras_mld.build(tiny_backbone(), head="gap", num_classes=3, input_shape=(32, 32, 3))
    assert m.class_names == ["0", "1", "2"]


@pytest.mark.parametrize("head", ["gap", "mldecoder", "query2label", "ctran"])
def test_keras_round_trip_keeps_names_thresholds_task_and_scores(head, tmp_path):
    model = _model(head, thresholds=[0.1, 0.25, 0.5, 0.75, 0.9], task="singlelabel"
                   if head == "gap" else "multilabel")
    x = _images()
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded) is keras_mld.ImageClassifier
    assert loaded.class_names == NAMES
    assert loaded.thresholds == [0.1, 0.25, 0.5, 0.75, 0.9]
    assert loaded.task == model.task and loaded.image_size == (32, 32)
    np.testing.assert_array_equal(to_np(model(x, training=False)),
                                  to_np(loaded(x, training=False)))
    for key in ("class_names", "thresholds", "task", "name"):
        assert loaded.get_config()[key] == model.get_config()[key]


def test_compile_defaults_are_the_papers():
    model = _model()
    model.compile()
    opt = model.optimizer
    assert isinstance(opt, TorchAdam) and not opt.decoupled  # torch.optim.Adam, coupled L2
    assert float(to_np(opt.learning_rate)) == pytest.approx(1e-4)
    assert (opt.l2, opt.epsilon) == (pytest.approx(1e-4), 1e-8)
    assert isinstance(model.loss, keras_mld.losses.AsymmetricLoss)
    assert (model.loss.gamma_neg, model.loss.gamma_pos, model.loss.clip) == (4.0, 0.0, 0.05)
    x = _images(8)
    y = (np.random.default_rng(2).uniform(size=(8, 5)) < 0.4).astype("float32")
    y[0] = 1.0
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    logits = to_np(model(x, training=False))
    # the exact mAP against the numpy reference, the ASL loss against its formula
    assert logs["mAP"] == pytest.approx(keras_mld.metrics.mean_average_precision(y, logits),
                                        abs=1e-6)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    pm = np.maximum(p - 0.05, 0)
    loss = -(y * np.log(np.maximum(p, 1e-8))
             + (1 - y) * pm ** 4 * np.log(np.maximum(1 - pm, 1e-8))).sum(-1).mean()
    assert logs["loss"] == pytest.approx(loss, rel=1e-4)
    # weight decay skips biases and norms
    for v in model.trainable_variables:
        decayed = len(v.shape) > 1 and not v.path.endswith("bias")
        assert opt._use_weight_decay(v) == decayed, v.path


def test_compile_single_label_and_overrides():
    model = _model("gap", task="singlelabel")
    model.compile()
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)
    x, y = _images(4), np.array([0, 1, 2, 4])
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    logits = to_np(model(x, training=False)).astype(np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert logs["loss"] == pytest.approx(-logp[np.arange(4), y].mean(), rel=1e-5)
    assert logs["accuracy"] == pytest.approx((logits.argmax(-1) == y).mean())
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", metrics=[])
    assert isinstance(model.optimizer, keras.optimizers.SGD) and model.loss == "mse"


@pytest.mark.parametrize("kwargs, argument, accepted", [
    (dict(class_names=["a", "b", "a"]), "class_names", "unique"),
    (dict(class_names=["a", ""]), "class_names", "non-empty"),
    (dict(class_names=["a", "b"], num_classes=3), "class_names", "3 classes"),
    (dict(class_names=NAMES, thresholds=[0.5] * 4), "thresholds", "5 floats"),
    (dict(class_names=NAMES, thresholds=[0.5, 0.5, 0.5, 0.5, 1.5]), "thresholds", r"\[0, 1\]"),
    (dict(class_names=NAMES, thresholds={"cow": 0.2}), "thresholds", "unknown class names"),
    (dict(class_names=NAMES, task="multiclass"), "task", "multilabel"),
])
def test_bad_metadata_names_the_argument(kwargs, argument, accepted):
    with pytest.raises(ValueError, match=argument) as info:
        keras_mld.build(tiny_backbone(), head="gap", input_shape=(32, 32, 3), **kwargs)
    assert info.match(accepted)


def test_threshold_setter_validates_and_accepts_names():
    model = _model("gap")
    model.thresholds = {"dog": 0.2, "tree": 0.9}
    assert model.thresholds == [0.5, 0.2, 0.5, 0.5, 0.9]
    with pytest.raises(ValueError, match="thresholds.*unknown class names"):
        model.thresholds = {"Dog": 0.2}
    with pytest.raises(ValueError, match="thresholds"):
        model.thresholds = [0.5] * 6
    assert model.thresholds == [0.5, 0.2, 0.5, 0.5, 0.9]  # unchanged by the failures


# ----------------------------------------------------------------------------- preprocessor
def test_preprocessor_resizes_with_the_training_function_and_normalises():
    from keras_mld.data import image as image_lib
    from keras_mld.models import preprocessor as pre

    assert pre.RESIZE_METHOD == image_lib.RESIZE_METHOD
    layer = ImageClassifierPreprocessor((24, 20), "torch")
    x = _images(2, (37, 51), dtype="uint8")
    resized = image_lib.resize(x, (24, 20)).numpy()
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(to_np(layer(x)), (resized / 255.0 - mean) / std, atol=1e-5)
    np.testing.assert_array_equal(to_np(layer(x)), to_np(layer(x.astype("float32"))))
    # an image already at the size passes unchanged (the resize would be the identity)
    same = _images(1, (24, 20))
    np.testing.assert_array_equal(to_np(layer.resize(same)), same)
    np.testing.assert_allclose(image_lib.resize(same, (24, 20)).numpy(), same, atol=1e-4)
    with pytest.raises(ValueError, match="image_size"):
        ImageClassifierPreprocessor((0, 3))
    with pytest.raises(ValueError, match="normalization"):
        ImageClassifierPreprocessor((4, 4), "imagenet")


def test_model_takes_uint8_and_float_of_any_size_resized_as_in_training():
    from keras_mld.data.image import resize

    model = _model("gap")
    x = _images(3, (45, 61), dtype="uint8")
    inside = to_np(model.predict(x, verbose=0))
    outside = to_np(model.predict(resize(x, (32, 32)).numpy(), verbose=0))
    np.testing.assert_allclose(inside, outside, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(inside, to_np(model.predict(x.astype("float32"), verbose=0)))


# ----------------------------------------------------------------------------- predict_labels
def _encoded_images():
    from keras_mld.export.warmup import encode_image, sample_image

    return [encode_image(sample_image(40, 50, seed=4), "png"),
            encode_image(sample_image(30, 20, seed=5), "jpeg"),
            encode_image(sample_image(64, 33, seed=6), "png")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A classifier with per-class thresholds, exported with no metadata arguments."""
    keras.utils.set_random_seed(3)
    model = _model(thresholds=[0.45, 0.5, 0.55, 0.5, 0.4])
    root = tmp_path_factory.mktemp("exported")
    from keras_mld.export import export_saved_model

    path = export_saved_model(model, root / "m", top_k=3)
    return model, path, root


def test_predict_labels_equals_the_served_predict_images(exported):
    import tensorflow as tf

    model, path, root = exported
    blobs = _encoded_images()
    files = []
    for i, b in enumerate(blobs):
        files.append(root / f"im{i}.{'jpg' if i == 1 else 'png'}")
        files[-1].write_bytes(b)
    served = tf.saved_model.load(path).signatures["predict_images"](
        image_bytes=tf.constant(blobs))
    for source in (blobs, [str(f) for f in files], [files[0], blobs[1], str(files[2])]):
        ours = model.predict_labels(source, top_k=3)
        assert len(ours) == 3
        for i, r in enumerate(ours):
            n = int(served["num_labels"][i])
            names = [x.decode() for x in served["labels"][i].numpy()[:n]]
            assert [name for name, _ in r["labels"]] == names
            scores = served["scores"][i].numpy()
            for name, score in r["labels"] + r["top_k"]:
                assert score == pytest.approx(float(scores[NAMES.index(name)]), abs=1e-6)
            assert [name for name, _ in r["top_k"]] == [
                x.decode() for x in served["top_k_labels"][i].numpy()]
            np.testing.assert_allclose([s for _, s in r["top_k"]],
                                       served["top_k_scores"][i].numpy(), atol=1e-6)
            # every class at or above its threshold, best first, nothing else
            t = model.thresholds
            assert [s for _, s in r["labels"]] == sorted((s for _, s in r["labels"]), reverse=True)
            assert set(names) == {NAMES[j] for j in range(5) if scores[j] >= np.float32(t[j])}


def test_export_reads_names_thresholds_task_and_size_from_the_model(exported):
    import tensorflow as tf

    model, path, _ = exported
    meta = tf.saved_model.load(path).signatures["metadata"]()
    assert [x.decode() for x in meta["labels"].numpy()] == NAMES
    np.testing.assert_array_equal(meta["thresholds"].numpy(),
                                  np.float32([0.45, 0.5, 0.55, 0.5, 0.4]))
    assert meta["task"].numpy().decode() == "multilabel"
    assert meta["image_size"].numpy().tolist() == [32, 32]


def test_predict_labels_on_arrays_of_mixed_sizes_and_thresholds():
    model = _model("gap", thresholds=0.0)
    arrays = [_images(1, (20, 44), dtype="uint8")[0], _images(1, (32, 32), seed=1)[0]]
    out = model.predict_labels(arrays, top_k=2)
    from keras_mld.data.image import resize

    batch = np.stack([resize(a, (32, 32)).numpy() for a in arrays])
    logits = to_np(model(batch, training=False)).astype(np.float64)
    p = 1 / (1 + np.exp(-logits))
    for row, r in zip(p, out):
        order = np.argsort(-row, kind="stable")
        assert [n for n, _ in r["labels"]] == [NAMES[j] for j in order]  # threshold 0: all
        assert [n for n, _ in r["top_k"]] == [NAMES[j] for j in order[:2]]
        np.testing.assert_allclose([s for _, s in r["top_k"]], row[order[:2]], rtol=1e-5)
    model.thresholds = 1.0
    assert all(r["labels"] == [] for r in model.predict_labels(arrays))
    with pytest.raises(ValueError, match="images"):
        model.predict_labels([b"not an image"])
    with pytest.raises(ValueError, match="top_k"):
        model.predict_labels(arrays, top_k=0)


def test_tune_thresholds_stores_per_class_f1_thresholds(tmp_path):
    import tensorflow as tf

    model = _model("gap")
    x = _images(24, seed=5)
    y = (np.random.default_rng(6).uniform(size=(24, 5)) < 0.5).astype("float32")
    y[:, 4] = 0.0  # no positive: keeps 0.5
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(7)
    t = model.tune_thresholds(ds)
    p = 1 / (1 + np.exp(-to_np(model(x, training=False)).astype(np.float64)))
    expected = keras_mld.metrics.tune_thresholds(y, p)
    np.testing.assert_allclose(t, expected, rtol=1e-6)
    assert model.thresholds == pytest.approx(list(expected), rel=1e-6) and t[4] == 0.5
    np.testing.assert_allclose(model.tune_thresholds(x, labels=y), expected, rtol=1e-6)
    model.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").thresholds == model.thresholds


# ----------------------------------------------------------------------------- presets
def test_preset_folder_round_trip_is_exact(tmp_path):
    import json

    model = _model(thresholds=[0.2, 0.3, 0.4, 0.6, 0.8])
    recipe = {"name": "mine", "model": {"backbone": "tiny"}, "train": {"lr": 0.01},
              "path": "/somewhere/mine.yaml"}
    path = model.save_to_preset(tmp_path / "preset", recipe=recipe, validation={"mAP": 0.5})
    assert sorted(os.listdir(tmp_path)) == ["preset"]  # nothing left aside
    loaded = keras_mld.ImageClassifier.from_preset(path)
    x = _images(3, (40, 40), dtype="uint8")
    np.testing.assert_array_equal(to_np(model.predict(x, verbose=0)),
                                  to_np(loaded.predict(x, verbose=0)))
    assert loaded.class_names == NAMES and loaded.thresholds == [0.2, 0.3, 0.4, 0.6, 0.8]
    assert loaded.task == "multilabel"
    meta = json.loads((tmp_path / "preset" / "metadata.json").read_text())
    assert meta["keras_mld_version"] == keras_mld.__version__
    assert meta["class_names"] == NAMES and meta["validation"] == {"mAP": 0.5}
    assert meta["recipe"] == {"name": "mine", "model": {"backbone": "tiny"},
                              "train": {"lr": 0.01}}
    with pytest.raises(ValueError, match="preset_dir.*overwrite"):
        model.save_to_preset(path)
    model.thresholds = 0.7
    model.save_to_preset(path, overwrite=True)
    assert keras_mld.ImageClassifier.from_preset(path).thresholds == [0.7] * 5
    assert sorted(os.listdir(tmp_path)) == ["preset"]


def test_preset_save_crash_leaves_nothing(tmp_path, monkeypatch):
    model = _model("gap")

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(model, "save_weights", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        model.save_to_preset(tmp_path / "p")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("damage, match", [
    ("missing-weights", "model.weights.h5 is missing"),
    ("missing-config", "config.json is missing"),
    ("corrupt-metadata", "metadata.json is not a readable JSON"),
    ("corrupt-weights", "model.weights.h5 could not be loaded"),
    ("deep-config", "config.json is not a readable JSON.*RecursionError"),
    ("nested-config", "config.json is not a readable JSON.*nested more than 64"),
    ("latin1-metadata", "metadata.json is not a readable JSON.*UnicodeDecodeError"),
])
def test_damaged_preset_names_the_file_and_the_known_presets(tmp_path, damage, match):
    path = _model("gap").save_to_preset(tmp_path / "p")
    kind, name = damage.split("-")
    target = os.path.join(path, {"weights": "model.weights.h5", "config": "config.json",
                                 "metadata": "metadata.json"}[name])
    garbage = {"corrupt": b"\x00garbage{", "deep": b"[" * 100_000,
               "nested": b"[" * 70 + b"]" * 70, "latin1": b'{"format": "caf\xe9"}'}
    if kind == "missing":
        os.remove(target)
    else:
        with open(target, "wb") as f:
            f.write(garbage[kind])
    with pytest.raises(ValueError, match=match) as info:
        keras_mld.ImageClassifier.from_preset(path)
    assert info.match("preset") and info.match("mldecoder_coco")


def test_unknown_preset_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"preset: unknown preset name 'mldecoder_cocoa'.*"
                                         r"mldecoder_coco"):
        keras_mld.ImageClassifier.from_preset("mldecoder_cocoa")


def test_builtin_presets_are_the_recipes():
    from keras_mld import recipes

    from keras_mld.models.ml_decoder.official import OFFICIAL_CHECKPOINTS
    from keras_mld.models.tresnet.pretrained import timm_models

    names = keras_mld.list_presets()
    assert "mldecoder_coco" in names and "aam_voc" in names and "demo" not in names
    # besides the recipes: the official ML-Decoder checkpoints and timm's TResNets on the Hub
    published = set(OFFICIAL_CHECKPOINTS) | {"hf://timm/" + n for n in timm_models()}
    assert set(names) - published <= set(recipes.list_recipes())
    assert published <= set(names)
    model = keras_mld.ImageClassifier.from_preset("mldecoder_coco", backbone=tiny_backbone(),
                                                  weights=None, input_shape=(32, 32, 3))
    recipe = recipes.load_recipe("mldecoder_coco")["model"]
    decoder = model.get_layer("ml_decoder")
    assert model.class_names == list(COCO_CLASS_NAMES)
    assert decoder.num_groups == recipe["head_kwargs"]["num_groups"]
    assert decoder.embed_dim == recipe["head_kwargs"]["embed_dim"]
    with pytest.raises(ValueError, match="class_names"):
        keras_mld.ImageClassifier.from_preset("aam_voc", weights=None)


def test_compiled_model_reloads_compiled_with_the_same_defaults(tmp_path):
    model = _model("gap")
    model.compile()
    x = _images(4)
    y = (np.random.default_rng(0).uniform(size=(4, 5)) < 0.5).astype("float32")
    model.train_on_batch(x, y)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(loaded.optimizer, TorchAdam)
    assert loaded.loss.gamma_neg == 4.0 and loaded.loss.clip == 0.05
    for v in loaded.trainable_variables:
        assert loaded.optimizer._use_weight_decay(v) == (len(v.shape) > 1), v.path
    np.testing.assert_allclose(loaded.evaluate(x, y, verbose=0, return_dict=True)["loss"],
                               model.evaluate(x, y, verbose=0, return_dict=True)["loss"],
                               rtol=1e-6)


def test_numpy_integers_are_accepted_like_python_ints():
    # e.g. num_classes=y.max() + 1: build, predict_labels and TResNet take numpy integers
    model = keras_mld.build("small_convnet", head="gap", num_classes=np.int64(3),
                            input_shape=(16, 16, 3))
    assert model.num_classes == 3
    images = np.zeros((3, 20, 20, 3), "uint8")
    batched = model.predict_labels(list(images), batch_size=np.int64(2))
    assert batched == model.predict_labels(list(images), batch_size=3)
    from keras_mld.models.tresnet import tresnet

    small = tresnet(layers=tuple(np.int64(1) for _ in range(4)), width_factor=np.float32(0.125),
                    input_shape=(64, 64, 3), num_classes=np.int64(5), include_top=True)
    assert small.output_shape == (None, 5)
