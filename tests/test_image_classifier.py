"""keras_mld.ImageClassifier: build defaults, config round trip, compile defaults, bad input,
preprocessor, predict_labels, thresholds."""
import io

import numpy as np
import pytest
import keras

import keras_mld
from keras_mld.models import COCO_CLASS_NAMES, ImageClassifierPreprocessor
from tests.helpers import to_np
from tests.tiny import SMALL_HEAD_KWARGS, tiny_backbone

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
    assert isinstance(opt, keras.optimizers.AdamW)
    assert float(to_np(opt.learning_rate)) == pytest.approx(1e-4)
    assert opt.weight_decay == pytest.approx(1e-4)
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
