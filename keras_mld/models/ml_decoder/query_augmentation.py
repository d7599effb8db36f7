"""Query augmentations for zero-shot ML-Decoder (Ridnik et al., "ML-Decoder: Scalable and
Versatile Classification Head" (arXiv:2111.12933),
section 2.3.3 "Query augmentations", appendix K). Training only: every layer here is
the exact identity when ``training`` is false or ``None`` (inference, ``predict``, export).

They act on the label word vectors ``V [M, d_w]`` (the word queries before their
projection), which are batch independent:

- :class:`QueryNoise` -- *query-noise*: ``V + N(0, s^2)``, fresh noise every call (batch).
- :class:`RandomQueries` -- *random-query*: appends ``R`` random vectors drawn from
  ``N(mean_d, std_d^2)``, the per-dimension mean and (population) standard deviation of
  the current ``V``: ``[M, d_w] -> [M + R, d_w]``.
- :class:`RandomQueryLoss` -- the other half of random-query: the decoder scores all
  ``M + R`` queries, this layer adds the loss of the ``R`` random-query logits against the
  target 1 to the model's losses (``add_loss``, so ``model.fit`` minimises it with the
  compiled loss) and returns only the ``M`` real logits. The model output, the compiled
  loss's ``y_pred`` and every metric therefore see ``[B, M]`` in training and inference
  alike; ``y_true`` stays ``[B, M]`` (no target padding).

The default random-query loss is ``mean_batch(sum_r -log sigmoid(x_r))``: the positive
term of binary cross-entropy summed over the R columns, which equals the extra columns of
``AsymmetricLoss`` (sum over classes, mean over batch; ``gamma_pos = 0``), so the total is
the compiled ASL on ``M + R`` columns with targets ``[y, 1, ..., 1]``. Any Keras loss may
be given instead (called as ``loss(ones [B, R], logits [B, R])``).

:class:`keras_mld.layers.ZSLMLDecoder` wires the three together (``query_noise=s``,
``random_queries=R``): noise on the real vectors, then the random queries, decoder,
then :class:`RandomQueryLoss`.
"""
import keras
from keras import ops

from keras_mld.validation import check_int, check_seed


def _check_vectors(owner, shape):
    if len(shape) != 2:
        raise ValueError(f"{owner}: label vectors must have rank 2 ([num_labels, word_dim]), "
                         f"got shape {tuple(shape)}")


def positive_log_loss(y_true, y_pred):
    """``mean_batch(sum_r -log sigmoid(x))`` (target 1), float32; ``y_true`` is ignored."""
    x = ops.cast(y_pred, "float32")
    return ops.mean(ops.sum(ops.softplus(-x), axis=-1))


@keras.saving.register_keras_serializable(package="keras_mld")
class QueryNoise(keras.layers.Layer):
    """*query-noise* (ML-Decoder 2.3.3): ``V + eps``, ``eps ~ N(0, stddev^2)`` i.i.d. per
    entry, drawn anew at every training call; identity when not training.

    Args:
        stddev: ``s >= 0`` (0 disables it).
        seed: int or None, for ``keras.random.SeedGenerator``.

    Input/output ``[M, d_w]`` (any shape works; the noise has the input's shape).
    """

    def __init__(self, stddev, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(stddev, (int, float)) or isinstance(stddev, bool) or \
                not stddev >= 0 or stddev == float("inf"):
            raise ValueError(f"QueryNoise: stddev must be a finite float >= 0, got {stddev!r}")
        seed = check_seed("QueryNoise", seed)
        self.stddev = float(stddev)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        if not training or self.stddev == 0:
            return x
        noise = keras.random.normal(ops.shape(x), stddev=self.stddev, dtype="float32",
                                    seed=self.seed_generator)
        return x + ops.cast(noise, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_mld")
class RandomQueries(keras.layers.Layer):
    """*random-query* (ML-Decoder 2.3.3): in training, appends ``num_queries`` R random
    vectors ``r_i ~ N(mu, diag(sigma^2))`` to ``V [M, d_w]`` -> ``[M + R, d_w]``, where
    ``mu`` and ``sigma`` are the per-dimension mean and population standard deviation of
    the ``M`` vectors of this call (so they match the word vectors' statistics). Their
    target is always 1; see :class:`RandomQueryLoss`. Identity when not training.

    Args:
        num_queries: R >= 1.
        seed: int or None.
    """

    def __init__(self, num_queries, seed=None, **kwargs):
        super().__init__(**kwargs)
        num_queries = check_int("RandomQueries", "num_queries", num_queries, minimum=1)
        seed = check_seed("RandomQueries", seed)
        self.num_queries = num_queries
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        _check_vectors("RandomQueries", inputs.shape)
        x = ops.cast(inputs, self.compute_dtype)
        if not training:
            return x
        v = ops.cast(ops.stop_gradient(x), "float32")
        mean = ops.mean(v, axis=0, keepdims=True)
        std = ops.sqrt(ops.mean(ops.square(v - mean), axis=0, keepdims=True))
        dim = v.shape[1] if v.shape[1] is not None else ops.shape(v)[1]
        z = keras.random.normal((self.num_queries, dim), dtype="float32",
                                seed=self.seed_generator)
        return ops.concatenate([x, ops.cast(mean + std * z, self.compute_dtype)], axis=0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)  # at inference (the symbolic call) nothing is appended

    def get_config(self):
        return {**super().get_config(), "num_queries": self.num_queries, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_mld")
class RandomQueryLoss(keras.layers.Layer):
    """Targets of the random queries (ML-Decoder 2.3.3): in training, ``logits [B, M + R]``
    (the last ``num_queries`` R columns scored the random queries appended by
    :class:`RandomQueries`) -> adds ``loss(ones [B, R], logits[:, M:])`` to the layer's
    losses (``add_loss``; ``model.fit`` adds it to the compiled loss) and returns the real
    logits ``[B, M]``. Identity when not training. Metrics never see the random columns.

    Args:
        num_queries: R >= 1 (the same R as :class:`RandomQueries`).
        loss: None (default :func:`positive_log_loss`, ``mean_batch(sum_r softplus(-x))``,
            consistent with ``AsymmetricLoss``) or a Keras loss object.
        weight: multiplies the added loss (default 1).
    """

    def __init__(self, num_queries, loss=None, weight=1.0, **kwargs):
        super().__init__(**kwargs)
        num_queries = check_int("RandomQueryLoss", "num_queries", num_queries, minimum=1)
        if loss is not None and not isinstance(loss, keras.losses.Loss):
            loss = keras.losses.get(loss)
            if not isinstance(loss, keras.losses.Loss):
                raise ValueError("RandomQueryLoss: loss must be None or a keras.losses.Loss "
                                 f"(or its name / config), got {loss!r}")
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0:
            raise ValueError(f"RandomQueryLoss: weight must be a float >= 0, got {weight!r}")
        self.num_queries = num_queries
        self.loss = loss
        self.weight = float(weight)

    def call(self, logits, training=None):
        if not training:
            return logits
        num_real = ops.shape(logits)[1] - self.num_queries
        random_logits = ops.cast(logits[:, num_real:], "float32")
        targets = ops.ones_like(random_logits)
        fn = positive_log_loss if self.loss is None else self.loss
        self.add_loss(self.weight * ops.cast(fn(targets, random_logits), "float32"))
        return logits[:, :num_real]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        loss = None if self.loss is None else keras.saving.serialize_keras_object(self.loss)
        return {**super().get_config(), "num_queries": self.num_queries, "loss": loss,
                "weight": self.weight}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("loss") is not None:
            config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        return cls(**config)
