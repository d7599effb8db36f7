"""TResNet (keras_mld/tresnet.py): its layers against numpy written from the paper
(Ridnik et al., arXiv:2003.13630, section 2), sizes against timm / the official code,
registry, serialization. Runs on TensorFlow and (through tests/convert/test_tresnet_parity.py)
on JAX."""
import os

import numpy as np
import pytest
import keras

import keras_mld
from keras_mld import registry
from keras_mld.models.tresnet import TRESNET_VARIANTS, BlurPool2D, SpaceToDepth, tresnet, tresnet_variant


def test_space_to_depth_matches_definition():
    x = np.random.default_rng(0).normal(size=(2, 8, 12, 3)).astype("float32")
    out = np.asarray(SpaceToDepth(4)(x))
    ref = np.zeros((2, 2, 3, 48), "float32")
    for i in range(4):
        for j in range(4):
            for c in range(3):  # official channel order: (row offset, column offset, channel)
                ref[:, :, :, (i * 4 + j) * 3 + c] = x[:, i::4, j::4, c]
    np.testing.assert_array_equal(out, ref)


def _blur_reference(x):
    f = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    h = (x.shape[1] - 1) // 2 + 1
    w = (x.shape[2] - 1) // 2 + 1
    out = np.zeros((x.shape[0], h, w, x.shape[3]))
    for a in range(h):
        for b in range(w):
            out[:, a, b] = np.einsum("nijc,ij->nc", p[:, 2 * a:2 * a + 3, 2 * b:2 * b + 3], f)
    return out


@pytest.mark.parametrize("hw", [(8, 8), (5, 7)])
def test_blur_pool_matches_reflect_padded_binomial_filter(hw):
    x = np.random.default_rng(1).normal(size=(2, *hw, 4)).astype("float32")
    layer = BlurPool2D()
    out = np.asarray(layer(x))
    np.testing.assert_allclose(out, _blur_reference(x), rtol=1e-5, atol=1e-6)
    assert layer.weights == []  # a fixed filter, not a weight
    assert layer.compute_output_shape((None, *hw, 4)) == out.shape[:0] + (None,) + out.shape[1:]


def test_shortcut_average_pool_is_ceil_mode_without_padding():
    # the stride-2 shortcut: AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
    x = np.random.default_rng(2).normal(size=(1, 5, 5, 2)).astype("float32")
    out = np.asarray(keras.layers.AveragePooling2D(2, 2, padding="same")(x))
    ref = np.stack([np.stack([x[0, 2 * a:2 * a + 2, 2 * b:2 * b + 2].mean(axis=(0, 1))
                              for b in range(3)]) for a in range(3)])[None]
    np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_layer_configs_and_errors():
    assert SpaceToDepth.from_config(SpaceToDepth(2).get_config()).block_size == 2
    assert BlurPool2D.from_config(BlurPool2D(name="b").get_config()).stride == 2
    with pytest.raises(ValueError, match="block_size"):
        SpaceToDepth(0)
    with pytest.raises(ValueError, match="multiples of block_size"):
        SpaceToDepth(4)(np.zeros((1, 6, 8, 3), "float32"))
    with pytest.raises(ValueError, match="filt_size"):
        BlurPool2D(filt_size=5)
    with pytest.raises(ValueError, match="layers"):
        tresnet(layers=(1, 1, 1))
    with pytest.raises(ValueError, match="input_shape"):
        tresnet(layers=(1, 1, 1, 1), width_factor=0.125, input_shape=(66, 64, 3))
    with pytest.raises(ValueError, match="weights"):
        tresnet(weights="imagenet")
    with pytest.raises(ValueError, match="variant"):
        tresnet_variant("tresnet_s")


# sum of state-dict entries (parameters + BN running statistics) of the PyTorch models with a
# 1000-class fc, counted with timm 1.0.31 (timm.create_model(name)) and the official
# Alibaba-MIIL/ML_Decoder TResnetM/L/XL; Keras count_params() also counts the BN statistics.
TORCH_SIZES = {
    "tresnet_m": 31450600,        # timm tresnet_m == official TResnetM
    "tresnet_l": 46280168,        # official TResnetL == timm tresnet_v2_l
    "tresnet_xl": 69458280,       # official TResnetXL
    "tresnet_l_timm": 56088816,   # timm tresnet_l
}


@pytest.mark.parametrize("variant", sorted(TORCH_SIZES))
def test_variant_sizes_match_pytorch(variant):
    model = tresnet_variant(variant, include_top=True, num_classes=1000, input_shape=(64, 64, 3))
    assert model.count_params() == TORCH_SIZES[variant]
    assert model.get_layer("head_pool").input.shape[1:3] == (2, 2)  # output stride 32


def test_registered_and_built_by_name():
    for name in TRESNET_VARIANTS:
        assert name in registry.list_backbones()
        assert registry.get_backbone(name).normalization == "unit"  # x / 255, no mean / std
    model = keras_mld.build("tresnet_m", head="mldecoder", num_classes=80, weights=None,
                            num_groups=80)
    assert model.output.shape == (None, 80)
    assert model.get_layer("tresnet_m").output.shape == (None, 7, 7, 2048)


def test_keras_round_trip_safe_mode(tmp_path):
    model = tresnet(layers=(1, 2, 1, 1), width_factor=0.125, include_top=True, num_classes=5,
                    input_shape=(64, 64, 3))
    # non-trivial BN statistics so that the reload is checked on them too
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_variance.shape))
    x = rng.uniform(0, 1, size=(2, 64, 64, 3)).astype("float32")
    path = os.path.join(tmp_path, "t.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_cli_bench_passes_backbone_option(monkeypatch):
    # `keras-mld bench --backbone tresnet_m ...` reaches the bench's own parser unchanged
    import keras_mld.app.bench
    from keras_mld.app.cli import main
    seen = []
    monkeypatch.setattr(keras_mld.app.bench, "main", lambda argv: seen.append(argv) or 0)
    assert main(["bench", "--backbone", "tresnet_m", "--size", "224"]) == 0
    assert seen == [["--backbone", "tresnet_m", "--size", "224"]]
    assert keras_mld.app.bench.parse_args(seen[0]).backbone == "tresnet_m"
