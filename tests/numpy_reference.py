"""numpy references of standard transformer pieces (LayerNorm, Dense, multi-head
attention), written from their definitions, shared by the layer tests."""
import numpy as np

from tests.helpers import to_np


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
