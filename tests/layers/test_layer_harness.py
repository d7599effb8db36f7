"""Every registered layer of ``keras_mld.layers`` through the one harness
(``tests/layer_harness.py``): shape/dtype, config round trip, ``.keras`` with safe_mode=True,
mixed_float16, XLA. On JAX: tests/test_jax_backend.py runs tests/layers (this file included)
again in a subprocess with ``KERAS_BACKEND=jax``."""
import keras
import numpy as np
import pytest

import keras_mld.layers as L
from tests.layer_harness import run_layer_test

RNG = np.random.default_rng(0)


def _x(*shape):
    return RNG.normal(size=shape).astype("float32")


def _known_labels(batch, n):
    return RNG.integers(-1, 2, size=(batch, n)).astype("float32")


# name -> (class, init kwargs, inputs, expected output shape, extra harness options)
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
    "TransformerDecoderHead": (L.TransformerDecoderHead,
                               dict(num_classes=4, hidden_dim=8, num_heads=2,
                                    num_encoder_layers=1, num_decoder_layers=1, ff_dim=16),
                               _x(2, 3, 3, 5), (2, 4), {}),
    "CTranHead": (L.CTranHead, dict(num_classes=4, embed_dim=8, num_layers=1, num_heads=2),
                  [_x(2, 3, 3, 5), _known_labels(2, 4)], (2, 4), {}),
}


def _registered_layers():
    """Names of the layer classes registered by modules of keras_mld.layers."""
    return sorted(
        name.split(">", 1)[1] for name, obj in keras.saving.get_custom_objects().items()
        if name.startswith("keras_mld>") and isinstance(obj, type)
        and issubclass(obj, keras.layers.Layer) and obj.__module__.startswith("keras_mld.layers"))


def _sub_layer_cases():
    """Registered helper layers of the Query2Label decoder (built from their parent's case)."""
    from keras_mld.layers import transformer_decoder as td

    cases = {}
    if hasattr(td, "PostNormDecoderLayer"):
        cases["PostNormDecoderLayer"] = (
            td.PostNormDecoderLayer, dict(hidden_dim=8, num_heads=2, ff_dim=16),
            [_x(2, 3, 8), _x(2, 5, 8)], (2, 3, 8), {})
    if hasattr(td, "PostNormEncoderLayer"):
        cases["PostNormEncoderLayer"] = (
            td.PostNormEncoderLayer, dict(hidden_dim=8, num_heads=2, ff_dim=16),
            _x(2, 5, 8), (2, 5, 8), {})
    return cases


ALL_CASES = {**CASES, **_sub_layer_cases()}


def test_every_registered_layer_has_a_harness_case():
    missing = sorted(set(_registered_layers()) - set(ALL_CASES))
    assert not missing, f"add a case to tests/layers/test_layer_harness.py for: {missing}"


@pytest.mark.parametrize("name", sorted(ALL_CASES))
def test_layer_harness(name):
    cls, kwargs, inputs, shape, options = ALL_CASES[name]
    run_layer_test(cls, kwargs, inputs, shape, **options)
