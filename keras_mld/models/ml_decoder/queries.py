"""Query construction for ML-Decoder (ML-Decoder (Ridnik et al., arXiv:2111.12933)
section 2.3.2 and appendix A).

Every query type is a layer registered under a name in ``QUERY_TYPES``; ML-Decoder
builds its queries with ``make_queries(query_type, num_queries, embed_dim)`` and
calls them on the visual tokens ``e [B, T, D]`` to get ``q [B, K, D]`` (the batch
size comes from ``e``). A new type is a subclass of ``Queries`` added with
``register_query_type(name, cls)``. Word queries (zero-shot, section 2.3.3) are not one: the label
word vectors are an input of the model and the label count varies between calls, so they
live in ``zero_shot.py`` (``WordQueries``, ``ZSLMLDecoder``).
"""
import keras
from keras import ops

from keras_mld.validation import check_choice, check_int

QUERY_TYPES = {}


def register_query_type(name, cls):
    """Make ``cls`` (a ``Queries`` subclass) available as ``query_type=name``."""
    QUERY_TYPES[name] = cls
    return cls


def make_queries(query_type, num_queries, embed_dim, **kwargs):
    """Instantiate the query layer for ``query_type`` (one of ``QUERY_TYPES``)."""
    check_choice("make_queries", "query_type", query_type, sorted(QUERY_TYPES))
    return QUERY_TYPES[query_type](num_queries=num_queries, embed_dim=embed_dim, **kwargs)


class Queries(keras.layers.Layer):
    """Base class: ``call(tokens, ...)`` returns queries ``[B, num_queries, embed_dim]``."""

    def __init__(self, num_queries, embed_dim, **kwargs):
        super().__init__(**kwargs)
        num_queries = check_int(type(self).__name__, "num_queries", num_queries, minimum=1)
        embed_dim = check_int(type(self).__name__, "embed_dim", embed_dim, minimum=1)
        self.num_queries = num_queries
        self.embed_dim = embed_dim

    def compute_output_shape(self, tokens_shape, *args):
        return (tokens_shape[0], self.num_queries, self.embed_dim)

    def get_config(self):
        return {**super().get_config(), "num_queries": self.num_queries,
                "embed_dim": self.embed_dim}


@keras.saving.register_keras_serializable(package="keras_mld")
class LearnableQueries(Queries):
    """``query_type="learnable"``: a trainable ``q [K, D]`` initialised from N(0, 1)
    (the official ``nn.Embedding`` init), broadcast over the batch."""

    query_trainable = True

    def build(self, tokens_shape, *args):
        self.queries = self.add_weight(
            name="queries", shape=(self.num_queries, self.embed_dim),
            initializer=keras.initializers.RandomNormal(mean=0.0, stddev=1.0),
            trainable=self.query_trainable)

    def call(self, tokens):
        q = ops.cast(self.queries, self.compute_dtype)
        batch = ops.shape(tokens)[0]
        return ops.broadcast_to(q[None], (batch, self.num_queries, self.embed_dim))


@keras.saving.register_keras_serializable(package="keras_mld")
class FixedQueries(LearnableQueries):
    """``query_type="fixed"`` (ML-Decoder default): ``q [K, D]`` drawn once from
    N(0, 1) and never trained. Stored as a non-trainable weight, so a saved model
    reloads the very same queries (and ``layer.trainable = True`` does not make it
    trainable)."""

    query_trainable = False


register_query_type("fixed", FixedQueries)
register_query_type("learnable", LearnableQueries)
