"""Label graphs from training labels: co-occurrence, conditional probabilities, ML-GCN adjacency.

The label graphs of Prokofiev & Sovrasov (arXiv:2209.06585) section 3.3 and ML-GCN, Chen et al.
(arXiv:1904.03582) section 3.3;
3.3 builds ``Z`` "in the same way as" ML-GCN (Chen et al., CVPR 2019, section 3.4).

Conventions (all numpy, float32 results):

* ``labels``: multi-hot ``[M, N]``; an entry counts as positive only when it equals 1
  (0 and -1 "unknown/ignored", as in the losses, are both "not positive").
* :func:`cooccurrence` ``C = Y^T Y`` (int64): ``C_ij`` images with both i and j, the
  diagonal ``C_ii = count(i)``.
* :func:`conditional_probability` ``Z_ij = P(j | i) = count(i and j) / count(i)``.
  Diagonal: ``Z_ii = 0`` by default (ML-GCN's co-occurrence statistics hold no self pairs;
  the self loop is added later by the graph layer / :func:`reweight`). A label that never
  occurs (``count(i) = 0``) gets an all-zero row (no evidence, no edges), so ``Z`` is
  always finite.
* :func:`binarize`: ML-GCN's threshold, ``B_ij = 1`` if ``Z_ij >= tau`` else 0 (tau = 0.4).
* :func:`reweight` (official ML-GCN ``gen_A``): ``A = B * p / (column sums of B + 1e-6) + I``.
  The paper writes ``p / sum_j A_ij`` (row sums) and ``1 - p`` on the diagonal; the official
  code divides by the column sums and adds the identity, which is what is reproduced here
  (its code hard-codes p = 0.25, the paper uses p = 0.2: the default here).
* :func:`normalize_adjacency` (official ML-GCN ``gen_adj``): ``D^-1/2 A^T D^-1/2`` with
  ``D = diag(row sums of A)``. Note the transpose: GCN row i aggregates row j with weight
  ``~ A_ji``, i.e. label i gathers from the labels j whose presence makes i likely
  (``P(i | j) >= tau``).
* :func:`gat_adjacency`: the edges of the same graph for graph attention, 0/1 with self
  loops: row i attends to j iff ``i == j`` or ``Z_ji >= tau`` (the support of
  :func:`mlgcn_adjacency`, as in OpenVINO's GAT branch, which masks attention with it).
"""
import numpy as np


def _labels(labels):
    y = np.asarray(labels)
    if y.ndim != 2 or y.shape[1] < 1:
        raise ValueError(f"labels: expected a multi-hot array [num_images, num_classes], got shape "
                         f"{y.shape}")
    if y.dtype.kind not in "biuf":
        raise ValueError(f"labels: expected numbers in {{0, 1}} (or -1 for unknown), got dtype "
                         f"{y.dtype}")
    values = np.unique(y)
    if not np.all(np.isin(values, (-1, 0, 1))):
        raise ValueError(f"labels: entries must be 0, 1 or -1 (unknown), got values "
                         f"{values[~np.isin(values, (-1, 0, 1))][:5].tolist()}")
    return (y == 1).astype("int64")


def _square(name, matrix):
    a = np.asarray(matrix, dtype="float64")
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 1:
        raise ValueError(f"{name}: expected a square matrix [N, N], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: matrix has non-finite entries")
    return a


def label_counts(labels):
    """``count(i)``: number of images where label i is positive, ``[N]`` int64."""
    return _labels(labels).sum(axis=0)


def cooccurrence(labels):
    """Co-occurrence counts ``C = Y^T Y`` ``[N, N]`` int64 (diagonal = ``count(i)``)."""
    y = _labels(labels)
    return y.T @ y


def conditional_probability(labels, diagonal=0.0):
    """The label correlation matrix ``Z_ij = P(j | i) = count(i and j) / count(i)``.

    Args:
        labels: multi-hot ``[M, N]`` training labels (1 positive; 0 / -1 not).
        diagonal: value put on ``Z_ii`` (default 0: ML-GCN convention, see module docstring;
            1.0 gives the literal ``P(i | i)`` for labels that occur).

    Returns:
        float32 ``[N, N]``, rows of never-seen labels all zero (diagonal included).
    """
    if not isinstance(diagonal, (int, float)) or isinstance(diagonal, bool):
        raise ValueError(f"conditional_probability: diagonal must be a number, got {diagonal!r}")
    c = cooccurrence(labels).astype("float64")
    counts = np.diag(c).copy()
    z = np.divide(c, counts[:, None], out=np.zeros_like(c), where=counts[:, None] > 0)
    np.fill_diagonal(z, np.where(counts > 0, float(diagonal), 0.0))
    return z.astype("float32")


def binarize(z, tau=0.4):
    """ML-GCN binarisation ``B_ij = 1 if Z_ij >= tau else 0`` (float32 ``[N, N]``)."""
    if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not 0 <= tau <= 1:
        raise ValueError(f"binarize: tau must be a float in [0, 1], got {tau!r}")
    return (_square("binarize", z) >= tau).astype("float32")


def reweight(b, p=0.2, eps=1e-6):
    """ML-GCN re-weighting (official ``gen_A``): ``A = B * p / (colsum(B) + eps) + I``.

    ``B`` is a binary ``[N, N]`` matrix from :func:`binarize` (zero diagonal when built from
    :func:`conditional_probability`); ``p`` in [0, 1] is the total weight of a node's
    neighbours (paper: p = 0.2). Returns float32 ``[N, N]``.
    """
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p <= 1:
        raise ValueError(f"reweight: p must be a float in [0, 1], got {p!r}")
    b = _square("reweight", b)
    a = b * p / (b.sum(axis=0, keepdims=True) + eps) + np.eye(b.shape[0])
    return a.astype("float32")


def normalize_adjacency(a):
    """ML-GCN symmetric normalisation (official ``gen_adj``): ``D^-1/2 A^T D^-1/2``.

    ``D = diag(sum_j A_ij)`` (row sums; every row must have a positive sum, true after
    :func:`reweight`, which adds the identity). Returns float32 ``[N, N]``, the propagation
    matrix of :class:`keras_mld.layers.MLGCNHead` (``H' = A_hat H W``).
    """
    a = _square("normalize_adjacency", a)
    d = a.sum(axis=1)
    if np.any(d <= 0):
        raise ValueError("normalize_adjacency: every row of A must have a positive sum "
                         "(add self loops, e.g. with reweight)")
    s = d ** -0.5
    return (s[:, None] * a.T * s[None, :]).astype("float32")


def mlgcn_adjacency(z, tau=0.4, p=0.2):
    """ML-GCN's normalised adjacency from ``Z``:
    ``normalize_adjacency(reweight(binarize(Z, tau), p))``."""
    return normalize_adjacency(reweight(binarize(z, tau), p))


def gat_adjacency(z, tau=0.4):
    """0/1 attention graph ``[N, N]`` with self loops: ``E_ij = 1`` iff ``i == j`` or
    ``Z_ji >= tau``.

    The edges of :func:`mlgcn_adjacency` (same direction convention); the mask for
    :class:`keras_mld.layers.GraphAttentionReweight` (row i attends to the j with E_ij = 1).
    """
    e = binarize(z, tau).T.copy()
    np.fill_diagonal(e, 1.0)
    return e
