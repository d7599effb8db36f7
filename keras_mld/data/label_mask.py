"""C-Tran label-mask training (LMT) for tf.data (Lanchantin et al., "General Multi-label Image
Classification with Transformers", arXiv:2011.14027, section 3.2).

C-Tran (Lanchantin et al., CVPR 2021) trains with part of each image's ground truth given
as input: a random subset of its labels is *revealed* as known states (0 known negative,
1 known positive), the rest are unknown (-1), and the loss falls on the unknown labels
only. The scheme follows the official code (``get_unk_mask_indices``, training branch):

    k ~ UniformInt{0, ..., floor(max_known_fraction * N)}   (max_known_fraction = 0.75)
    reveal the true value (0 or 1) at k label positions drawn uniformly without
    replacement from all N positions; the other N - k are unknown.

So the revealed entries are a uniform subset of *all* label positions (positives and
negatives alike, each with its true value); a sample reveals nothing with probability
``1 / (floor(0.75 N) + 1)``; the unknown count is ``N - k``, at least ``N - floor(0.75 N)``.

``targets`` are the labels with the revealed entries set to -1: the losses of this project
ignore ``y_true == -1``, so the loss covers the unknown labels only (official
``loss_labels='unk'``). Label entries already -1 (missing annotations) stay -1 in both.
``num_known=k`` instead reveals exactly ``min(k, N)`` labels per sample (the official
evaluation with partially known labels).

    train_ds = ctran_label_mask_dataset(train_ds, seed=0)   # ((images, states), targets)
    model = keras.Model([images, known], CTranHead(80)(features, known_labels=known))

Randomness is stateless (``tf.random.stateless_*``): the same seed pair gives the same
masks, independent of parallel map scheduling.
"""
import numpy as np
import tensorflow as tf

from keras_mld.validation import check_int, check_number


def _check_args(fn, max_known_fraction, num_known):
    check_number(fn, "max_known_fraction", max_known_fraction, low=0.0, high=1.0)
    check_int(fn, "num_known", num_known, minimum=0, allow_none=True)


def ctran_label_mask(labels, seed, max_known_fraction=0.75, num_known=None):
    """Reveal a random subset of each sample's labels (C-Tran label-mask training).

    Args:
        labels: multi-hot ``[B, N]`` or ``[N]`` (0/1; -1 = missing, kept as -1).
        seed: stateless seed, an int tensor / sequence of shape ``[2]``.
        max_known_fraction: revealed count ``k ~ UniformInt{0..floor(fraction * N)}``
            per sample (official 0.75).
        num_known: if set, reveal exactly ``min(num_known, N)`` labels per sample instead.

    Returns:
        ``(states, targets)``, both float32 with the shape of ``labels``: ``states`` in
        {-1 unknown, 0 known negative, 1 known positive} (the ``known_labels`` input of
        :class:`keras_mld.layers.CTranHead`); ``targets`` = labels with revealed entries -1.
    """
    _check_args("ctran_label_mask", max_known_fraction, num_known)
    y = tf.cast(tf.convert_to_tensor(labels), tf.float32)
    rank = y.shape.rank
    if rank not in (1, 2):
        raise ValueError(f"ctran_label_mask: labels must have shape [batch, num_classes] or "
                         f"[num_classes], got shape {y.shape}")
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64) or not seed.shape.is_compatible_with([2]):
        raise ValueError(f"ctran_label_mask: seed must be an int32/int64 tensor of shape [2], "
                         f"got {seed.dtype.name} {seed.shape}")
    seed = tf.cast(seed, tf.int64)  # same masks whatever the integer dtype of the seed
    if rank == 1:
        y = y[None]
    batch, n = tf.shape(y)[0], tf.shape(y)[1]
    count_seed, order_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if num_known is not None:
        k = tf.fill([batch], tf.minimum(tf.constant(int(num_known), tf.int32), n))
    else:
        static_n = y.shape[1]
        if static_n is not None:
            max_known = tf.constant(int(np.floor(max_known_fraction * static_n)), tf.int32)
        else:
            max_known = tf.cast(tf.floor(max_known_fraction * tf.cast(n, tf.float64)), tf.int32)
        k = tf.random.stateless_uniform([batch], count_seed, minval=0, maxval=max_known + 1,
                                        dtype=tf.int32)
    # a uniform random order of the N positions per sample; reveal the first k of it
    scores = tf.random.stateless_uniform(tf.stack([batch, n]), order_seed)
    rank_of = tf.argsort(tf.argsort(scores, axis=1), axis=1)
    known = rank_of < k[:, None]
    minus_one = -tf.ones_like(y)
    states = tf.where(known, y, minus_one)
    targets = tf.where(known, minus_one, y)
    if rank == 1:
        states, targets = states[0], targets[0]
    return states, targets


def ctran_label_mask_dataset(ds, seed=None, max_known_fraction=0.75, num_known=None,
                             rerandomize_each_iteration=True,
                             num_parallel_calls=tf.data.AUTOTUNE):
    """Map ``(images, labels)`` to ``((images, states), targets)`` for C-Tran training.

    Works on batched (labels ``[B, N]``) or unbatched (``[N]``) datasets; a third element
    (sample weights) is passed through: ``((images, states), targets, weights)``. Each
    element gets its own seed pair from ``Dataset.random(seed, rerandomize_each_iteration)``:
    with an int ``seed`` the masks are reproducible, and with
    ``rerandomize_each_iteration=True`` (training) each epoch draws new masks; use ``False``
    for a fixed evaluation set (e.g. with ``num_known``). As with any TensorFlow op seed,
    the sequence also depends on TensorFlow's global seed when one is set.
    """
    _check_args("ctran_label_mask_dataset", max_known_fraction, num_known)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ValueError(f"ctran_label_mask_dataset: seed must be an int or None, got {seed!r}")
    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError("ctran_label_mask_dataset: ds elements must be (images, labels) or "
                         f"(images, labels, sample_weights), got {spec}")
    seeds = tf.data.Dataset.random(seed=None if seed is None else int(seed),
                                   rerandomize_each_iteration=rerandomize_each_iteration)

    def apply(element, seed_pair):
        images, labels = element[0], element[1]
        states, targets = ctran_label_mask(labels, seed_pair, max_known_fraction, num_known)
        return ((images, states), targets) + tuple(element[2:])

    return tf.data.Dataset.zip((ds, seeds.batch(2, drop_remainder=True))).map(
        apply, num_parallel_calls=num_parallel_calls,
        deterministic=True if seed is not None else None)
