"""Label graphs (Chen et al. (arXiv:1904.03582); Prokofiev & Sovrasov (arXiv:2209.06585) 3.3):
co-occurrence, Z = P(j | i), ML-GCN binarise / re-weight /
normalise, against hand-computed values."""
import numpy as np
import pytest

from keras_mld import zsl

# 5 images, 4 labels; label 3 never occurs; one "unknown" (-1) entry, not a positive.
LABELS = np.array([
    [1, 1, 0, 0],
    [1, 0, 1, 0],
    [1, 1, 0, -1],
    [0, 1, 1, 0],
    [1, 0, 0, 0],
])
# counts: label0 in images 0,1,2,4 -> 4; label1 in 0,2,3 -> 3; label2 in 1,3 -> 2; label3 -> 0
# pairs: (0,1) images 0,2 -> 2; (0,2) image 1 -> 1; (1,2) image 3 -> 1
COOC = np.array([[4, 2, 1, 0],
                 [2, 3, 1, 0],
                 [1, 1, 2, 0],
                 [0, 0, 0, 0]])
# Z_ij = P(j | i) = C_ij / C_ii, zero diagonal, zero row for the never-seen label
Z = np.array([[0, 2 / 4, 1 / 4, 0],
              [2 / 3, 0, 1 / 3, 0],
              [1 / 2, 1 / 2, 0, 0],
              [0, 0, 0, 0]])
# tau = 0.4: 0.5, 2/3, 0.5, 0.5 pass; 0.25, 1/3 do not
B = np.array([[0, 1, 0, 0],
              [1, 0, 0, 0],
              [1, 1, 0, 0],
              [0, 0, 0, 0]])


def test_counts_and_cooccurrence():
    np.testing.assert_array_equal(zsl.label_counts(LABELS), [4, 3, 2, 0])
    np.testing.assert_array_equal(zsl.cooccurrence(LABELS), COOC)


def test_conditional_probability_hand_case():
    z = zsl.conditional_probability(LABELS)
    assert z.dtype == np.float32 and z.shape == (4, 4)
    np.testing.assert_allclose(z, Z, rtol=1e-6)


def test_conditional_probability_diagonal_option():
    z = zsl.conditional_probability(LABELS, diagonal=1.0)
    np.testing.assert_allclose(np.diag(z), [1, 1, 1, 0])  # never-seen label: still a zero row
    np.testing.assert_allclose(z - np.diag(np.diag(z)), Z, rtol=1e-6)


def test_binarize():
    np.testing.assert_array_equal(zsl.binarize(Z, 0.4), B)
    np.testing.assert_array_equal(zsl.binarize(Z, 0.5), B)  # >= tau is an edge
    np.testing.assert_array_equal(zsl.binarize(Z, 0.6), [[0, 0, 0, 0], [1, 0, 0, 0],
                                                         [0, 0, 0, 0], [0, 0, 0, 0]])


def test_reweight_hand_case():
    # column sums of B: [2, 2, 0, 0] -> each edge weighs p / 2 = 0.1; identity added
    a = zsl.reweight(B, p=0.2)
    expected = np.array([[1, 0.1, 0, 0],
                         [0.1, 1, 0, 0],
                         [0.1, 0.1, 1, 0],
                         [0, 0, 0, 1]])
    np.testing.assert_allclose(a, expected, atol=1e-6)


def test_normalize_adjacency_hand_case():
    a = np.array([[1, 0.1, 0, 0],
                  [0.1, 1, 0, 0],
                  [0.1, 0.1, 1, 0],
                  [0, 0, 0, 1]])
    # row sums d = [1.1, 1.1, 1.2, 1]; A_hat_ij = A_ji / sqrt(d_i d_j) (ML-GCN gen_adj)
    expected = np.array([
        [1 / 1.1, 0.1 / 1.1, 0.1 / np.sqrt(1.1 * 1.2), 0],
        [0.1 / 1.1, 1 / 1.1, 0.1 / np.sqrt(1.1 * 1.2), 0],
        [0, 0, 1 / 1.2, 0],
        [0, 0, 0, 1],
    ])
    np.testing.assert_allclose(zsl.normalize_adjacency(a), expected, rtol=1e-6)


def test_mlgcn_adjacency_end_to_end():
    z = zsl.conditional_probability(LABELS)
    expected = np.array([
        [1 / 1.1, 0.1 / 1.1, 0.1 / np.sqrt(1.1 * 1.2), 0],
        [0.1 / 1.1, 1 / 1.1, 0.1 / np.sqrt(1.1 * 1.2), 0],
        [0, 0, 1 / 1.2, 0],
        [0, 0, 0, 1],
    ])
    np.testing.assert_allclose(zsl.mlgcn_adjacency(z, tau=0.4, p=0.2), expected, rtol=1e-5)


def test_gat_adjacency_is_transposed_binary_graph_with_self_loops():
    e = zsl.gat_adjacency(Z, tau=0.4)
    # row i attends to j iff i == j or P(i | j) >= tau: label 0 <- 1 (P(0|1)=2/3) and
    # 0 <- 2 (P(0|2)=1/2); label 1 <- 0 (P(1|0)=1/2) and 1 <- 2 (P(1|2)=1/2)
    np.testing.assert_array_equal(e, [[1, 1, 1, 0],
                                      [1, 1, 1, 0],
                                      [0, 0, 1, 0],
                                      [0, 0, 0, 1]])
    # same support as ML-GCN's normalised adjacency
    np.testing.assert_array_equal(e > 0, zsl.mlgcn_adjacency(Z, 0.4, 0.2) > 0)


@pytest.mark.parametrize("fn, args, match", [
    (zsl.cooccurrence, (np.array([1, 0, 1]),), "labels"),
    (zsl.cooccurrence, (np.array([[0, 2]]),), "labels"),
    (zsl.conditional_probability, (np.array([["a", "b"]]),), "labels"),
    (zsl.binarize, (np.zeros((2, 3)),), "binarize"),
    (zsl.binarize, (np.zeros((2, 2)), 1.5), "tau"),
    (zsl.reweight, (np.zeros((2, 2)), -0.1), "p"),
    (zsl.normalize_adjacency, (np.zeros((2, 2)),), "positive"),
    (zsl.normalize_adjacency, (np.full((2, 2), np.nan),), "non-finite"),
])
def test_bad_arguments(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)
