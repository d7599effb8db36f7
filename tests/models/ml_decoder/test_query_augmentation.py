"""Query augmentations (ML-Decoder, arXiv:2111.12933, 2.3.3): identity at inference, active in
training, and random-query targets that never reach the model output or the metrics."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import keras_mld
from keras_mld.layers import QueryNoise, RandomQueries, RandomQueryLoss
from tests.support.helpers import to_np
from tests.models.ml_decoder.test_zero_shot import DW, X, randomise, reference, small, vecs, weights_of
from tests.support.tiny import tiny_backbone


def softplus(x):
    return np.logaddexp(0.0, x)


# ---------------------------------------------------------------- inactive at inference
@pytest.mark.parametrize("training", [False, None])
def test_layers_are_exact_identity_when_not_training(training):
    v = vecs(7, 0)
    logits = np.random.default_rng(1).normal(size=(3, 7)).astype("float32")
    for layer, x in ((QueryNoise(0.5), v), (RandomQueries(4), v), (RandomQueryLoss(2), logits)):
        y = layer(x, training=training)
        np.testing.assert_array_equal(to_np(y), x)
        assert layer.losses == []


@pytest.mark.parametrize("group_size", [1, 2])
def test_decoder_with_augmentations_is_plain_decoder_at_inference(group_size):
    layer = small(group_size, query_noise=0.7, random_queries=5, seed=3)
    v = vecs(5, 2)
    layer(X, v)
    randomise(layer)
    for training in (False, None):
        y = to_np(layer(X, v, training=training))
        assert y.shape == (2, 5) and layer.losses == []
        np.testing.assert_allclose(y, reference(X, v, weights_of(layer), group_size), atol=1e-5,
                                   rtol=0)
    np.testing.assert_array_equal(to_np(layer(X, v)), to_np(layer(X, v)))  # deterministic


# ---------------------------------------------------------------- query-noise
def test_query_noise_has_the_configured_std_and_changes_every_call():
    layer = QueryNoise(0.3, seed=1)
    v = np.tile(vecs(1, 3), (4000, 1))  # 24000 noise samples around fixed vectors
    a = to_np(layer(v, training=True)) - v
    b = to_np(layer(v, training=True)) - v
    for noise in (a, b):
        assert abs(noise.std() - 0.3) < 0.3 * 0.03
        assert abs(noise.mean()) < 0.01
    assert np.abs(a - b).min() >= 0 and not np.allclose(a, b)  # fresh noise per batch
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.05


def test_decoder_adds_the_noise_to_the_word_queries():
    """Training-mode logits = reference logits of V + noise, the noise being the draw of a
    QueryNoise with the same seed (dropout 0, so nothing else is random)."""
    layer = small(1, dropout=0.0, query_noise=0.25, seed=7)
    v = vecs(6, 4)
    layer(X, v)
    randomise(layer)
    noisy = to_np(QueryNoise(0.25, seed=7)(v, training=True))
    y = to_np(layer(X, v, training=True))
    np.testing.assert_allclose(y, reference(X, noisy, weights_of(layer), 1), atol=1e-5, rtol=0)
    assert np.abs(y - reference(X, v, weights_of(layer), 1)).max() > 1e-3


# ---------------------------------------------------------------- random-query
def test_random_queries_match_the_statistics_of_the_word_vectors():
    rng = np.random.default_rng(5)
    v = (rng.normal(size=(50, DW)) * np.arange(1, DW + 1) + np.arange(DW) * 3).astype("float32")
    layer = RandomQueries(20000, seed=2)
    out = to_np(layer(v, training=True))
    assert out.shape == (50 + 20000, DW)
    np.testing.assert_array_equal(out[:50], v)  # the real queries come first, unchanged
    extra = out[50:]
    np.testing.assert_allclose(extra.mean(0), v.mean(0), atol=0.05 * v.std(0).max())
    np.testing.assert_allclose(extra.std(0), v.std(0), rtol=0.03)
    again = to_np(layer(v, training=True))[50:]
    assert not np.allclose(again, extra)  # new random queries every batch


def test_random_query_loss_targets_are_one_and_only_m_columns_come_out():
    logits = np.random.default_rng(6).normal(size=(4, 9)).astype("float32")
    layer = RandomQueryLoss(3)
    out = to_np(layer(logits, training=True))
    np.testing.assert_array_equal(out, logits[:, :6])
    (loss,) = layer.losses
    np.testing.assert_allclose(to_np(loss), softplus(-logits[:, 6:]).sum(-1).mean(), rtol=1e-6)
    bce = RandomQueryLoss(3, loss=keras.losses.BinaryCrossentropy(from_logits=True), weight=0.5)
    bce(logits, training=True)
    # BCE against target 1 (target 0 would give softplus(+x))
    np.testing.assert_allclose(to_np(bce.losses[0]), 0.5 * softplus(-logits[:, 6:]).mean(),
                               rtol=1e-5)


@pytest.mark.parametrize("group_size", [1, 4])
def test_decoder_scores_random_queries_with_target_one(group_size):
    """Training: the R random queries (the draw of a RandomQueries with the decoder's seed + 1)
    are decoded with the real ones, their logits give the added loss with target 1, and the
    output keeps only the M real columns."""
    layer = small(group_size, dropout=0.0, random_queries=4, seed=10)
    v = vecs(5, 8)
    layer(X, v)
    randomise(layer)
    augmented = to_np(RandomQueries(4, seed=11)(v, training=True))
    ref = reference(X, augmented, weights_of(layer), group_size)  # [B, M + R]
    y = to_np(layer(X, v, training=True))
    assert y.shape == (2, 5)
    np.testing.assert_allclose(y, ref[:, :5], atol=1e-5, rtol=0)
    (loss,) = layer.losses
    np.testing.assert_allclose(to_np(loss), softplus(-ref[:, 5:]).sum(-1).mean(), rtol=1e-5)
    if group_size == 1:  # full decoding: random queries do not change the real scores
        np.testing.assert_allclose(y, to_np(layer(X, v, training=False)), atol=1e-5)


def test_random_query_loss_gradients_reach_every_trainable_weight():
    layer = small(1, dropout=0.0, random_queries=3, seed=1)
    v = vecs(4, 9)
    layer(X, v)
    variables = layer.trainable_weights
    backend = keras.backend.backend()
    if backend == "tensorflow":
        with tf.GradientTape() as tape:
            layer(X, v, training=True)
            (loss,) = layer.losses
        grads = [to_np(g) for g in tape.gradient(loss, [w.value for w in variables])]
    else:
        import jax

        def aux_loss(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values)),
                                      collect_losses=True) as scope:
                layer(X, v, training=True)
                return scope.losses[0]

        grads = [to_np(g) for g in jax.grad(aux_loss)([w.value for w in variables])]
    for var, g in zip(variables, grads):
        assert np.all(np.isfinite(g)) and np.any(g != 0), var.path


# ---------------------------------------------------------------- fit: metrics see M columns
def test_fit_adds_random_query_loss_and_metrics_see_only_real_labels():
    m, r = 5, 3
    seen = vecs(m, 1)
    model = keras_mld.build(tiny_backbone(), head="mldecoder", num_classes=m,
                            input_shape=(16, 16, 3), query_type="word", word_dim=DW,
                            embed_dim=8, num_heads=2, ff_dim=16, random_queries=r,
                            query_noise=0.1, label_vectors=seen)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    y = (rng.uniform(size=(4, m)) > 0.5).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((images, y)).batch(2)

    def width(y_true, y_pred):  # the number of label columns the metrics receive
        return ops.cast(ops.shape(y_pred)[1], "float32") + 0.0 * ops.mean(y_true)

    def zero_loss(y_true, y_pred):  # the compiled loss is 0: what fit reports is the added one
        return 0.0 * ops.mean(y_pred) + 0.0 * ops.mean(y_true)

    model.compile(optimizer="sgd", loss=zero_loss,
                  metrics=[keras.metrics.MeanMetricWrapper(width, name="width"),
                           keras.metrics.BinaryAccuracy()])
    history = model.fit(ds, epochs=1, verbose=0, validation_data=ds).history
    assert history["width"] == [m] and history["val_width"] == [m]
    assert history["loss"][0] > 0.1  # sum of R softplus terms
    assert history["val_loss"] == [0.0]  # inference: no random queries, nothing added
    unseen = vecs(9, 2)
    model.set_labels([f"u{i}" for i in range(9)], unseen)
    predicted = model.predict(ds, verbose=0)
    assert predicted.shape == (4, 9)
    np.testing.assert_allclose(
        predicted[:2], to_np(model(images[:2])), atol=1e-5)
    head = model.get_layer("ml_decoder")  # the explicit label set gives the same scores
    np.testing.assert_allclose(predicted[:2], to_np(head(
        model.backbone(model.preprocessor(images[:2])), label_vectors=unseen)), atol=1e-5)
