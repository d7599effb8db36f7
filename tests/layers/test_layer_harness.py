"""Every layer registered anywhere in the ``keras_mld`` package (``keras_mld.layers``,
the architecture folders of ``keras_mld.models``, ...) through the one harness
(``tests/support/layer_harness.py``): shape/dtype, config round trip, ``.keras`` with safe_mode=True,
mixed_float16, XLA. On JAX: tests/test_jax_backend.py runs tests/layers (this file included)
again in a subprocess with ``KERAS_BACKEND=jax``. Registered models (``keras.Model``
subclasses: ``ImageClassifier``, ``SAMModel``) have their own tests."""
import importlib
import pkgutil

import keras
import numpy as np
import pytest

import keras_mld
import keras_mld.layers as L
from keras_mld.models import tresnet
from keras_mld.layers import transformer as td
from keras_mld.models import ImageClassifierPreprocessor
from tests.support.layer_harness import run_layer_test

RNG = np.random.default_rng(0)


def _x(*shape):
    return RNG.normal(size=shape).astype("float32")


def _known_labels(batch, n):
    return RNG.integers(-1, 2, size=(batch, n)).astype("float32")


# name (the class name, "[variant]" for another configuration of it) -> (class, init kwargs,
# inputs, expected output shape, extra harness options)
CASES = {
    "CosineDense": (L.CosineDense, dict(units=3), _x(2, 5), (2, 3), {}),
    "GroupDense": (L.GroupDense, dict(num_classes=6), _x(2, 3, 4), (2, 6), {}),
    "MLDecoder": (L.MLDecoder, dict(num_classes=6, num_groups=3, embed_dim=8, num_heads=2,
                                    ff_dim=16), _x(2, 3, 3, 5), (2, 6), {}),
    "MLDecoderLayer": (L.MLDecoderLayer, dict(embed_dim=8, num_heads=2, ff_dim=16),
                       [_x(2, 3, 8), _x(2, 5, 8)], (2, 3, 8), {}),
    "GlobalPoolHead": (L.GlobalPoolHead, dict(num_classes=4, pooling="avg+max", dropout=0.2),
                       _x(2, 3, 3, 5), (2, 4), {}),
    "ImageNormalization": (L.ImageNormalization, dict(mode="unit"),
                           RNG.uniform(0, 255, size=(2, 4, 4, 3)).astype("float32"),
                           (2, 4, 4, 3), {}),
    "FixedQueries": (L.FixedQueries, dict(num_queries=3, embed_dim=8), _x(2, 5, 8), (2, 3, 8),
                     {}),
    "LearnableQueries": (L.LearnableQueries, dict(num_queries=3, embed_dim=8), _x(2, 5, 8),
                         (2, 3, 8), {}),
    # training=True appends random queries / drops their logits: other shapes by design
    "QueryNoise": (L.QueryNoise, dict(stddev=0.1, seed=1), _x(3, 8), (3, 8), {}),
    "RandomQueries": (L.RandomQueries, dict(num_queries=2, seed=1), _x(3, 8), (3, 8),
                      {"run_training": False}),
    "RandomQueryLoss": (L.RandomQueryLoss, dict(num_queries=2), _x(2, 5), (2, 5),
                        {"run_training": False}),
    "WordQueries": (L.WordQueries, dict(embed_dim=8), _x(5, 6), (5, 8), {}),
    "ZSLMLDecoder": (L.ZSLMLDecoder, dict(word_dim=6, embed_dim=8, num_heads=2, ff_dim=16),
                     [_x(2, 3, 3, 5), _x(5, 6)], (2, 5), {}),
    "GraphAttention": (L.GraphAttention, dict(units=4, num_heads=2),
                       [_x(4, 6), np.ones((4, 4), "float32")], (4, 8), {}),
    "GraphAttentionReweight": (L.GraphAttentionReweight,
                               dict(channels=8, label_vectors=_x(4, 6),
                                    adjacency=np.ones((4, 4), "float32"), hidden_dim=4),
                               _x(2, 3, 3, 8), (2, 3, 3, 8), {}),
    "MLGCNHead": (L.MLGCNHead, dict(num_classes=4, label_vectors=_x(4, 6),
                                    adjacency=np.full((4, 4), 0.25, "float32"), hidden_dim=5),
                  _x(2, 3, 8), (2, 4), {}),
    "SinePositionalEncoding2D": (L.SinePositionalEncoding2D, dict(num_channels=8),
                                 _x(2, 3, 4, 8), (2, 3, 4, 8), {}),
    # official defaults: no input projection (D = C), no decoder self-attention, post-norm
    "Query2LabelHead": (L.Query2LabelHead,
                               dict(num_classes=4, num_heads=2, num_encoder_layers=1,
                                    num_decoder_layers=2, ff_dim=16),
                               _x(2, 3, 3, 8), (2, 4), {}),
    # every keep_* flag on, pre-norm, Dense projection C=5 -> D=8
    "TransformerDecoderHead": (L.TransformerDecoderHead,
                               dict(num_classes=3, num_heads=2, ff_dim=16),
                               _x(2, 3, 3, 8), (2, 3), {}),
    "Query2LabelHead[keep_all, pre_norm]": (
        L.Query2LabelHead,
        dict(num_classes=4, hidden_dim=8, num_heads=2, num_encoder_layers=1,
             num_decoder_layers=2, ff_dim=16, keep_input_proj=True,
             keep_first_self_attn_dec=True, keep_other_self_attn_dec=True, pre_norm=True),
        _x(2, 3, 3, 5), (2, 4), {}),
    # call(x, pos): the positional term passed positionally
    "TransformerEncoderLayer": (td.TransformerEncoderLayer,
                                dict(hidden_dim=8, num_heads=2, ff_dim=16),
                                [_x(2, 5, 8), _x(2, 5, 8)], (2, 5, 8), {}),
    "TransformerEncoderLayer[pre_norm]": (td.TransformerEncoderLayer,
                                          dict(hidden_dim=8, num_heads=2, ff_dim=16,
                                               pre_norm=True),
                                          _x(2, 5, 8), (2, 5, 8), {}),
    # call(tgt, memory, pos, query_pos)
    "TransformerDecoderLayer": (td.TransformerDecoderLayer,
                                dict(hidden_dim=8, num_heads=2, ff_dim=16),
                                [_x(2, 3, 8), _x(2, 5, 8), _x(2, 5, 8), _x(2, 3, 8)],
                                (2, 3, 8), {}),
    "TransformerDecoderLayer[no self-attention, pre_norm]": (
        td.TransformerDecoderLayer,
        dict(hidden_dim=8, num_heads=2, ff_dim=16, self_attention=False, pre_norm=True),
        [_x(2, 3, 8), _x(2, 5, 8), _x(2, 5, 8), _x(2, 3, 8)], (2, 3, 8), {}),
    "CTranHead": (L.CTranHead, dict(num_classes=4, embed_dim=8, num_layers=1, num_heads=2),
                  [_x(2, 3, 3, 5), _known_labels(2, 4)], (2, 4), {}),
    # keras_mld.models.tresnet
    "SpaceToDepth": (tresnet.SpaceToDepth, dict(block_size=2), _x(2, 4, 6, 3), (2, 2, 3, 12),
                     {}),
    "BlurPool2D": (tresnet.BlurPool2D, dict(), _x(2, 5, 6, 3), (2, 3, 3, 3), {}),
    # keras_mld.models: uint8 images of another size -> resized and normalised float32
    "ImageClassifierPreprocessor": (
        ImageClassifierPreprocessor, dict(image_size=(4, 4), normalization="torch"),
        RNG.integers(0, 256, size=(2, 6, 8, 3)).astype("uint8"), (2, 4, 4, 3), {}),
}


def _import_the_whole_package():
    """Imports every module of keras_mld, so that every registration has happened (a layer
    may live outside keras_mld.layers, e.g. keras_mld.models.tresnet)."""
    for info in pkgutil.walk_packages(keras_mld.__path__, "keras_mld."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


def _registered_layers():
    """Names of the layer classes (not models) registered under the ``keras_mld`` package
    name by any module of keras_mld (each class once, under its own name)."""
    _import_the_whole_package()
    return sorted(
        name.split(">", 1)[1] for name, obj in keras.saving.get_custom_objects().items()
        if name.startswith("keras_mld>") and isinstance(obj, type)
        and issubclass(obj, keras.layers.Layer) and not issubclass(obj, keras.Model)
        and obj.__module__.startswith("keras_mld")
        and keras.saving.get_registered_name(obj) == name)


def test_registry_enumeration_sees_layers_outside_keras_mld_layers():
    found = set(_registered_layers())
    assert {"SpaceToDepth", "BlurPool2D", "ImageClassifierPreprocessor",
            "TransformerEncoderLayer", "TransformerDecoderLayer", "MLDecoder"} <= found, found
    assert "ImageClassifier" not in found  # a model: tests/models/test_image_classifier.py
    assert {"Query2LabelHead", "TransformerDecoderHead"} <= found  # and 0.1's name, for old files


def test_every_registered_layer_has_a_harness_case():
    covered = {name.split("[")[0] for name in CASES}
    missing = sorted(set(_registered_layers()) - covered)
    assert not missing, f"add a case to tests/layers/test_layer_harness.py for: {missing}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_harness(name):
    cls, kwargs, inputs, shape, options = CASES[name]
    run_layer_test(cls, kwargs, inputs, shape, **options)
