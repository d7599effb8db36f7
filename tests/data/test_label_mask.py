"""C-Tran label-mask training transform (tf.data)."""
import numpy as np
import pytest

pytestmark = pytest.mark.tf_only

tf = pytest.importorskip("tensorflow")

from keras_mld.data.label_mask import ctran_label_mask, ctran_label_mask_dataset  # noqa: E402

N = 6  # floor(0.75 * 6) = 4: 0..4 labels revealed per sample


def multi_hot(b, n=N, p=0.4, seed=0):
    return (np.random.default_rng(seed).random((b, n)) < p).astype("float32")


def check_consistent(labels, states, targets):
    assert states.shape == targets.shape == labels.shape
    assert set(np.unique(states)) <= {-1.0, 0.0, 1.0}
    known = states != -1
    np.testing.assert_array_equal(states[known], labels[known])  # true values revealed
    assert np.all(labels[states == 1] == 1)  # revealed positives are true positives
    assert np.all(labels[states == 0] == 0)
    np.testing.assert_array_equal(targets[known], -1.0)  # no loss on revealed entries
    np.testing.assert_array_equal(targets[~known], labels[~known])


def test_states_and_targets_consistent():
    y = multi_hot(300)
    states, targets = (t.numpy() for t in ctran_label_mask(y, [3, 4]))
    check_consistent(y, states, targets)


def test_deterministic_with_seed():
    y = multi_hot(50)
    a = [t.numpy() for t in ctran_label_mask(y, [1, 2])]
    b = [t.numpy() for t in ctran_label_mask(y, tf.constant([1, 2], tf.int64))]
    c = [t.numpy() for t in ctran_label_mask(y, [1, 3])]
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_known_count_follows_official_scheme():
    """k ~ UniformInt{0..floor(0.75 N)}, positions uniform over all N labels."""
    b = 2000
    y = multi_hot(b)
    states, _ = (t.numpy() for t in ctran_label_mask(y, [7, 8]))
    k = (states != -1).sum(1)
    unknown = (states == -1).sum(1)
    np.testing.assert_array_equal(unknown, N - k)
    assert k.min() == 0 and k.max() == 4  # some samples reveal nothing; never more than 4
    freq = np.bincount(k, minlength=5) / b
    np.testing.assert_allclose(freq, 0.2, atol=0.04)  # uniform over 0..4
    # every position equally likely to be revealed: E[k] / N = 2 / 6
    np.testing.assert_allclose((states != -1).mean(0), 2 / N, atol=0.04)
    # revealed values are not restricted to positives: negatives are revealed too
    assert (states == 0).any() and (states == 1).any()


def test_fraction_and_fixed_num_known():
    y = multi_hot(100, n=10)
    states, _ = ctran_label_mask(y, [0, 1], max_known_fraction=0.25)  # floor(2.5) = 2
    assert (states.numpy() != -1).sum(1).max() <= 2
    states, targets = (t.numpy() for t in ctran_label_mask(y, [0, 1], num_known=3))
    np.testing.assert_array_equal((states != -1).sum(1), 3)
    check_consistent(y, states, targets)
    states, _ = ctran_label_mask(y, [0, 1], num_known=50)
    assert np.all(states.numpy() == y)  # capped at N: everything revealed
    states, targets = ctran_label_mask(y, [0, 1], max_known_fraction=0.0)
    assert np.all(states.numpy() == -1) and np.all(targets.numpy() == y)


def test_rank_one_labels_and_missing_entries():
    y = np.array([1, 0, -1, 1, 0, 0], "float32")  # -1: missing annotation
    for s in range(20):
        states, targets = (t.numpy() for t in ctran_label_mask(y, [s, 0]))
        assert states.shape == targets.shape == (N,)
        assert states[2] == -1 and targets[2] == -1
        check_consistent(y, states, targets)


def test_dynamic_shapes_in_tf_function():
    fn = tf.function(lambda y, s: ctran_label_mask(y, s),
                     input_signature=[tf.TensorSpec([None, None]), tf.TensorSpec([2], tf.int32)])
    y = multi_hot(40)
    states, targets = (t.numpy() for t in fn(y, tf.constant([5, 6])))
    check_consistent(y, states, targets)
    assert (states != -1).sum(1).max() <= 4


def _collect(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), e) for e in ds]


def test_dataset_helper_batched_deterministic_and_rerandomized():
    images = np.random.rand(12, 2, 2, 3).astype("float32")
    y = multi_hot(12)
    base = tf.data.Dataset.from_tensor_slices((images, y)).batch(4)
    ds = ctran_label_mask_dataset(base, seed=11)
    first = _collect(ds)
    assert len(first) == 3
    for i, ((img, states), targets) in enumerate(first):
        np.testing.assert_array_equal(img, images[4 * i:4 * i + 4])
        check_consistent(y[4 * i:4 * i + 4], states, targets)
    again = _collect(ctran_label_mask_dataset(base, seed=11))  # same seed: same masks
    for (a, b) in zip(first, again):
        np.testing.assert_array_equal(a[0][1], b[0][1])
    second_epoch = _collect(ds)  # new masks each epoch
    assert any(not np.array_equal(a[0][1], b[0][1]) for a, b in zip(first, second_epoch))
    fixed = ctran_label_mask_dataset(base, seed=11, rerandomize_each_iteration=False)
    e1, e2 = _collect(fixed), _collect(fixed)
    for a, b in zip(e1, e2):
        np.testing.assert_array_equal(a[0][1], b[0][1])


def test_dataset_helper_unbatched_with_weights():
    y = multi_hot(5)
    w = np.arange(5, dtype="float32")
    base = tf.data.Dataset.from_tensor_slices((np.zeros((5, 3), "float32"), y, w))
    out = _collect(ctran_label_mask_dataset(base, seed=0))
    for i, ((_, states), targets, weight) in enumerate(out):
        assert states.shape == (N,) and weight == w[i]
        check_consistent(y[i], states, targets)


@pytest.mark.parametrize("kwargs,arg", [
    (dict(max_known_fraction=1.5), "max_known_fraction"),
    (dict(num_known=-1), "num_known"),
])
def test_bad_args(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        ctran_label_mask(multi_hot(2), [0, 0], **kwargs)
    with pytest.raises(ValueError, match=arg):
        ctran_label_mask_dataset(tf.data.Dataset.from_tensors((0.0, multi_hot(2))), 0, **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="labels"):
        ctran_label_mask(np.zeros((2, 3, 4), "float32"), [0, 0])
    with pytest.raises(ValueError, match="seed"):
        ctran_label_mask(multi_hot(2), [0, 0, 1])
    with pytest.raises(ValueError, match="seed"):
        ctran_label_mask_dataset(tf.data.Dataset.from_tensors((0.0, multi_hot(2))), seed=1.5)
    with pytest.raises(ValueError, match="images, labels"):
        ctran_label_mask_dataset(tf.data.Dataset.from_tensors(multi_hot(2)), seed=1)
