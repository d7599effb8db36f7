"""keras_mld.build / list_models: offline construction, every head, XLA equality, bad input."""
import numpy as np
import pytest
import keras

import keras_mld
from keras_mld import registry
from keras_mld.models.builder import create_backbone
from tests.support.helpers import to_np
from tests.support.tiny import SMALL_HEAD_KWARGS, tiny_backbone

pytestmark = pytest.mark.tf_only
HEADS = ["gap", "mldecoder", "query2label", "ctran"]


def _images(batch=4, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype("float32")


def _labels(batch=4, n=5, seed=1):
    y = (np.random.default_rng(seed).uniform(size=(batch, n)) < 0.4).astype("float32")
    y[:, 0] = 1.0
    return y


def test_list_models_names_the_contract():
    names = keras_mld.list_models()
    for b in ["efficientnetv2_b0", "efficientnetv2_s", "efficientnetv2_m", "efficientnetv2_l",
              "resnet50", "resnet101", "mobilenetv3_large", "convnext_tiny"]:
        assert b in names["backbones"]
    for h in HEADS:
        assert h in names["heads"]


@pytest.fixture
def no_network(monkeypatch):
    """Any download attempt fails loudly: construction must be offline."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args} {kwargs}")

    monkeypatch.setattr(keras.utils, "get_file", refuse)
    import keras.src.utils.file_utils as file_utils
    monkeypatch.setattr(file_utils, "get_file", refuse)


@pytest.mark.slow
@pytest.mark.parametrize("name", registry.list_backbones())
def test_every_registered_backbone_builds_offline(name, no_network):
    model = keras_mld.build(name, head="gap", num_classes=7, input_shape=(32, 32, 3))
    out = model(_images(2), training=False)
    assert out.shape == (2, 7)
    assert np.all(np.isfinite(to_np(out)))
    keras.backend.clear_session()


def test_backbone_normalisation_is_inside_the_model():
    """resnet50 expects caffe BGR mean-subtracted input: the model does it from [0,255] RGB."""
    model = keras_mld.build("resnet50", head="gap", num_classes=3, input_shape=(32, 32, 3))
    norm = model.get_layer("normalization")
    x = _images(1)
    expected = x[..., ::-1] - np.array([103.939, 116.779, 123.68], "float32")
    np.testing.assert_allclose(to_np(norm(x)), expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("head", HEADS)
def test_every_head_trains_with_xla_and_matches_no_xla(head):
    """Two SGD steps with jit_compile=True give the same losses as without XLA.

    Dropout is 0 so both runs are deterministic; tolerance 1e-4 relative (XLA fuses
    and reorders float32 reductions).
    """
    kwargs = dict(SMALL_HEAD_KWARGS[head])
    if head != "gap":
        kwargs["dropout"] = 0.0
    losses = {}
    initial = None
    for jit in (False, True):
        model = keras_mld.build(tiny_backbone(), head=head, num_classes=5, input_shape=(32, 32, 3),
                                **kwargs)
        if initial is None:
            initial = model.get_weights()
        else:
            model.set_weights(initial)
        model.compile(optimizer=keras.optimizers.SGD(0.05),
                      loss=keras_mld.losses.AsymmetricLoss(), jit_compile=jit)
        x, y = _images(), _labels()
        losses[jit] = [model.train_on_batch(x, y, return_dict=True)["loss"] for _ in range(2)]
        losses[jit].append(model.evaluate(x, y, verbose=0, return_dict=True)["loss"])
    assert all(np.isfinite(losses[True]))
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
    assert losses[True][2] != losses[True][0]  # the steps changed the weights


@pytest.mark.slow
def test_named_backbone_trains_two_steps_with_xla():
    model = keras_mld.build("mobilenetv3_small", head="mldecoder", num_classes=5,
                            input_shape=(32, 32, 3), **SMALL_HEAD_KWARGS["mldecoder"])
    model.compile(optimizer="adam", loss=keras_mld.losses.AsymmetricLoss(), jit_compile=True)
    hist = model.fit(_images(), _labels(), epochs=2, batch_size=4, verbose=0)
    assert all(np.isfinite(hist.history["loss"]))


@pytest.mark.parametrize("head", HEADS)
def test_keras_round_trip_safe_mode_every_head(head, tmp_path):
    model = keras_mld.build(tiny_backbone(), head=head, num_classes=5, input_shape=(32, 32, 3),
                            **SMALL_HEAD_KWARGS[head])
    x = _images()
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(to_np(model(x, training=False)), to_np(loaded(x, training=False)))


def test_token_backbone_and_dynamic_input_size():
    model = keras_mld.build(tiny_backbone(tokens=True), head="mldecoder", num_classes=5,
                            input_shape=(None, None, 3), **SMALL_HEAD_KWARGS["mldecoder"])
    assert model(_images(2, 32), training=False).shape == (2, 5)
    assert model(_images(2, 48), training=False).shape == (2, 5)


def test_ctran_known_labels_input():
    model = keras_mld.build(tiny_backbone(), head="ctran", num_classes=5, input_shape=(32, 32, 3),
                            known_labels_input=True, **SMALL_HEAD_KWARGS["ctran"])
    x = _images(2)
    unknown = -np.ones((2, 5), "float32")
    out = model({"images": x, "known_labels": unknown}, training=False)
    assert out.shape == (2, 5)


def test_single_label_1000_classes_trains_with_softmax_losses():
    model = keras_mld.build(tiny_backbone(), head="gap", num_classes=1000, input_shape=(32, 32, 3),
                            task="singlelabel")
    assert model.task == "singlelabel"
    y = np.array([3, 999, 0, 10])
    for loss in (keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                 keras_mld.losses.AsymmetricLossSingleLabel()):
        model.compile(optimizer="sgd", loss=loss, jit_compile=True)
        assert np.isfinite(model.train_on_batch(_images(), y, return_dict=True)["loss"])


def test_keras_cv_backbone_instance_offline(no_network):
    keras_cv = pytest.importorskip("keras_cv")
    bb = keras_cv.models.ResNetV2Backbone(stackwise_filters=[8, 16], stackwise_blocks=[2, 2],
                                          stackwise_strides=[1, 2], include_rescaling=False,
                                          input_shape=(32, 32, 3))
    model = keras_mld.build(bb, head="mldecoder", num_classes=5, input_shape=(32, 32, 3),
                            **SMALL_HEAD_KWARGS["mldecoder"])
    assert model(_images(2), training=False).shape == (2, 5)


def test_keras_hub_backbone_instance_offline(no_network):
    keras_hub = pytest.importorskip("keras_hub")
    bb = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        image_shape=(32, 32, 3))
    model = keras_mld.build(bb, head="query2label", num_classes=5, input_shape=(32, 32, 3),
                            normalization="torch", **SMALL_HEAD_KWARGS["query2label"])
    assert model(_images(2), training=False).shape == (2, 5)


def test_imagenet_weights_offline_fail_clearly(monkeypatch):
    import keras.src.utils.file_utils as file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example/x.h5: None -- [Errno -2] "
                        "Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(RuntimeError, match="weights='imagenet'"):
        keras_mld.build("mobilenetv3_small", head="gap", num_classes=3, input_shape=(32, 32, 3),
                        weights="imagenet")


def test_weights_from_path(tmp_path):
    bb = create_backbone("mobilenetv3_small", (32, 32, 3))
    path = str(tmp_path / "bb.weights.h5")
    bb.save_weights(path)
    model = keras_mld.build("mobilenetv3_small", head="gap", num_classes=3, input_shape=(32, 32, 3),
                            weights=path)
    loaded_bb = [layer for layer in model.layers if isinstance(layer, keras.Model)][0]
    for a, b in zip(bb.get_weights(), loaded_bb.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(backbone="resnet50", num_classes=0), "num_classes"),
    (dict(backbone="resnet50", num_classes="80"), "num_classes"),
    (dict(backbone="resnet5O", num_classes=3), "backbone"),
    (dict(backbone="resnet50", num_classes=3, head="mldecodr"), "head"),
    (dict(backbone="resnet50", num_classes=3, input_shape=(32, 32)), "input_shape"),
    (dict(backbone="resnet50", num_classes=3, input_shape=(32, 32, 1)), "input_shape"),
    (dict(backbone="resnet50", num_classes=3, input_shape=(16, 16, 3)), "input_shape"),
    (dict(backbone="resnet50", num_classes=3, task="multiclass"), "task"),
    (dict(backbone="resnet50", num_classes=3, weights="/no/such/file.h5"), "weights"),
    (dict(backbone="resnet50", num_classes=3, normalization="imagenet"), "normalization"),
])
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument) as info:
        keras_mld.build(**{"input_shape": (32, 32, 3), **kwargs})
    # the accepted values are listed too, where there is a list
    if argument in ("backbone", "head", "task", "normalization"):
        assert "[" in str(info.value) or "(" in str(info.value)


def test_backbone_with_wrong_output_rank_is_rejected():
    x_in = keras.Input(shape=(32, 32, 3))
    flat = keras.Model(x_in, keras.layers.GlobalAveragePooling2D()(x_in))
    with pytest.raises(ValueError, match="backbone"):
        keras_mld.build(flat, head="gap", num_classes=3, input_shape=(32, 32, 3))


def test_num_groups_above_num_classes_is_clamped_with_a_note():
    with pytest.warns(UserWarning, match="num_groups"):
        model = keras_mld.build(tiny_backbone(), head="mldecoder", num_classes=4,
                                input_shape=(32, 32, 3), num_groups=10, embed_dim=16, num_heads=2,
                                ff_dim=32)
    assert model.get_layer("ml_decoder").num_groups == 4
