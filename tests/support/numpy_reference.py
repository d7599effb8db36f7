"""numpy references of standard transformer pieces (LayerNorm, Dense, multi-head
attention), written from their definitions, shared by the layer tests."""
import numpy as np

from tests.support.helpers import to_np


def np_ln(x, ln, eps=1e-5):
    g, b = (to_np(w) for w in (ln.gamma, ln.beta))
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def np_dense(x, dense):
    return x @ to_np(dense.kernel) + to_np(dense.bias)


def np_mha(q, k, v, mha):
    def proj(x, d):
        return np.einsum("btd,dhk->bthk", x, to_np(d.kernel)) + to_np(d.bias)

    qh, kh, vh = proj(q, mha.query_dense), proj(k, mha.key_dense), proj(v, mha.value_dense)
    s = np.einsum("bthk,bshk->bhts", qh, kh) / np.sqrt(qh.shape[-1])
    s = np.exp(s - s.max(-1, keepdims=True))
    a = s / s.sum(-1, keepdims=True)
    o = np.einsum("bhts,bshk->bthk", a, vh)
    return np.einsum("bthk,hkd->btd", o, to_np(mha.output_dense.kernel)) + to_np(
        mha.output_dense.bias)


def finite_diff(f, x, h=1e-6):
    """Central differences of the scalar ``f`` at ``x`` (float64), one coordinate at a time."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = h
        g[i] = (f(x + d) - f(x - d)) / (2 * h)
    return g


def decoder_layer_weights(dl):
    """The weights of one ``MLDecoderLayer`` as float64 arrays, keyed as the numpy decoders of
    the ML-Decoder / ZSL tests expect (g/b: LayerNorms, w/b q k v o: attention, w/c 1 2: FFN)."""
    f = lambda v: to_np(v).astype(np.float64)  # noqa: E731
    a = dl.attention
    return {
        "g1": f(dl.norm1.gamma), "b1": f(dl.norm1.beta),
        "g2": f(dl.norm2.gamma), "b2": f(dl.norm2.beta),
        "g3": f(dl.norm3.gamma), "b3": f(dl.norm3.beta),
        "wq": f(a._query_dense.kernel), "bq": f(a._query_dense.bias),
        "wk": f(a._key_dense.kernel), "bk": f(a._key_dense.bias),
        "wv": f(a._value_dense.kernel), "bv": f(a._value_dense.bias),
        "wo": f(a._output_dense.kernel), "bo": f(a._output_dense.bias),
        "w1": f(dl.linear1.kernel), "c1": f(dl.linear1.bias),
        "w2": f(dl.linear2.kernel), "c2": f(dl.linear2.bias),
    }
