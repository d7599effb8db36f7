"""keras_mld.data.randaugment_policy against the ``randaugment`` package (1.0.2): its
tables, its dispatch, its sampling distribution (chi-square / binomial tests over many
seeded draws, expected frequencies counted from the package's own policy list) and whole
seeded policies replayed through the package; CutoutPIL against Pillow's rectangle."""
import collections

import numpy as np
import pytest
import tensorflow as tf

from keras_mld.data import randaugment_policy as rp
from tests.support import randaugment_package

pytestmark = pytest.mark.tf_only
Image = pytest.importorskip("PIL.Image")
ImageDraw = pytest.importorskip("PIL.ImageDraw")
skdata = pytest.importorskip("skimage.data")
stats = pytest.importorskip("scipy.stats")
package = randaugment_package.load()

PHOTO = Image.fromarray(skdata.chelsea()).resize((37, 29), Image.BILINEAR)  # W 37, H 29
ALPHA = 1e-4  # significance of every frequency test (seeded, so deterministic)


class _Pinned:
    """Pins the package's random draws: ``random.random`` / ``random.choice`` / numpy's
    ``randint`` return the given values in order."""

    def __init__(self, uniforms=(), signs=(), ints=()):
        self.uniforms, self.signs, self.ints = list(uniforms), list(signs), list(ints)

    def __enter__(self):
        self.saved = (package.random.random, package.random.choice, package.np.random.randint)
        package.random.random = lambda: self.uniforms.pop(0)
        package.random.choice = lambda seq: self.signs.pop(0)
        package.np.random.randint = lambda low, high=None: self.ints.pop(0)
        return self

    def __exit__(self, *exc):
        package.random.random, package.random.choice, package.np.random.randint = self.saved


def test_operations_and_tables_are_the_packages():
    assert tuple(package.RandAugment.get_trans_list()) == rp.OPS
    for name in rp.OPS:
        for m in range(10):
            sub = package.SubPolicy(0.5, name, m, 0.5, name, m)
            np.testing.assert_array_equal(np.float64(sub.magnitude1),
                                          np.float64(rp.MAGNITUDES[name][m]), err_msg=name)


def _ours_op(op, magnitude, sign, centre):
    image = tf.constant(np.asarray(PHOTO))
    return rp.apply_op(image, tf.constant(op), magnitude, sign, centre).numpy()


@pytest.mark.parametrize("op", range(len(rp.OPS)))
def test_each_dispatched_op_is_the_packages(op):
    name = rp.OPS[op]
    for magnitude, sign in [(3, -1), (8, 1)]:
        cx, cy = 30, 4
        with _Pinned(uniforms=[0.0, 0.9], signs=[sign], ints=[cx, cy]):
            want = np.asarray(package.SubPolicy(0.5, name, magnitude, 0.5, "Invert", 1)(PHOTO))
        centre = ((cx + 0.5) / PHOTO.size[0], (cy + 0.5) / PHOTO.size[1])
        got = _ours_op(op, magnitude, float(sign), centre)
        np.testing.assert_array_equal(got, want, err_msg=f"{name} m={magnitude}")


def _draws(n, seed=7):
    ds = tf.data.Dataset.range(n).map(
        lambda i: rp.sample_policy(tf.stack([i, tf.constant(seed, tf.int64)])))
    return {k: v.numpy() for k, v in next(iter(ds.batch(n))).items()}


def _chi2_pvalue(observed, expected_probs):
    observed = np.asarray(observed, float).ravel()
    expected = np.asarray(expected_probs, float).ravel() * observed.sum()
    return stats.chisquare(observed, expected).pvalue


def test_sampling_follows_the_packages_distribution():
    n = 20000
    d = _draws(n)
    # the package's distribution, counted from its own list of (op, magnitude) pairs
    policies = package.RandAugment.get_rand_policies()
    index = {(name, m): rp.OPS.index(name) * 9 + m - 1 for name in rp.OPS for m in range(1, 10)}
    first = np.zeros(135)
    pairs = np.zeros((15, 15))
    for (p1, name1, m1), (p2, name2, m2) in policies:
        assert p1 == p2 == rp.APPLY_PROBABILITY
        first[index[(name1, m1)]] += 1
        pairs[rp.OPS.index(name1), rp.OPS.index(name2)] += 1
    first /= first.sum()
    pairs /= pairs.sum()
    cells = d["op"] * 9 + d["magnitude"] - 1
    for k in range(2):  # each sub-operation: (op, magnitude) over 135 cells
        assert _chi2_pvalue(np.bincount(cells[:, k], minlength=135), first) > ALPHA
    joint = collections.Counter(zip(d["op"][:, 0], d["op"][:, 1]))
    observed = [[joint[(i, j)] for j in range(15)] for i in range(15)]
    assert _chi2_pvalue(observed, pairs) > ALPHA  # op pairs drawn independently
    for key, p in [("apply", rp.APPLY_PROBABILITY), ("sign", 0.5)]:
        hits = int(np.sum(d[key] > 0))
        assert stats.binomtest(hits, 2 * n, p).pvalue > ALPHA, key
    assert stats.kstest(d["centre"].ravel(), "uniform").pvalue > ALPHA


_SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Color", "Contrast", "Sharpness",
           "Brightness"}


@pytest.mark.parametrize("seed", [0, 3, 11, 12, 18, 39, 99])
def test_whole_policy_replays_through_the_package(seed):
    seed = tf.constant([seed, 99], tf.int64)
    d = {k: v.numpy() for k, v in rp.sample_policy(seed).items()}
    ours = rp.randaugment(tf.constant(np.asarray(PHOTO)), seed).numpy()
    w, h = PHOTO.size
    names, (m1, m2) = [rp.OPS[i] for i in d["op"]], d["magnitude"]
    uniforms = [0.0 if a else 0.9 for a in d["apply"]]
    # the package draws a sign only in the signed operations and a centre only in Cutout,
    # and only when the operation is applied: feed ours in that order
    applied = [k for k in range(2) if d["apply"][k]]
    used_signs = [int(d["sign"][k]) for k in applied if names[k] in _SIGNED]
    used_ints = [v for k in applied if names[k] == "Cutout"
                 for v in (int(d["centre"][k, 0] * w), int(d["centre"][k, 1] * h))]
    name1, name2 = names
    with _Pinned(uniforms=uniforms, signs=used_signs, ints=used_ints):
        want = np.asarray(package.SubPolicy(0.5, name1, m1, 0.5, name2, m2)(PHOTO))
    np.testing.assert_array_equal(ours, want, err_msg=f"{name1} {m1} / {name2} {m2}")
    np.testing.assert_array_equal(ours, rp.randaugment(np.asarray(PHOTO), seed).numpy())


def test_cutout_pil_draws_the_released_rectangle():
    """ML-Decoder's CutoutPIL as released (h, w = size; box from the issue's formula),
    drawn with Pillow's ImageDraw, against ours on a non-square photo."""
    rng = np.random.default_rng(0)
    w, h = PHOTO.size
    for factor in (0.5, 0.4):
        for _ in range(12):
            y_c, x_c = int(rng.integers(w)), int(rng.integers(h))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            hh, ww = w, h  # the released code's names: h, w = x.size[0], x.size[1]
            hc, wc = int(factor * hh + 0.5), int(factor * ww + 0.5)
            box = [np.clip(x_c - wc // 2, 0, ww), np.clip(y_c - hc // 2, 0, hh),
                   np.clip(x_c + wc // 2, 0, ww), np.clip(y_c + hc // 2, 0, hh)]
            want = PHOTO.copy()
            ImageDraw.Draw(want).rectangle([int(v) for v in box], fill=colour)
            got = rp.cutout_pil_apply(tf.constant(np.asarray(PHOTO)), factor, y_c, x_c,
                                      colour).numpy()
            np.testing.assert_array_equal(got, np.asarray(want))


def test_cutout_pil_draws_are_uniform():
    n = 6000
    ds = tf.data.Dataset.range(n).map(
        lambda i: rp.sample_cutout_pil(tf.constant([5, 7, 3]), tf.stack([i, 4 + 0 * i])))
    y_c, x_c, colour = (v.numpy() for v in next(iter(ds.batch(n))))
    assert _chi2_pvalue(np.bincount(y_c, minlength=7), np.full(7, 1 / 7)) > ALPHA
    assert _chi2_pvalue(np.bincount(x_c, minlength=5), np.full(5, 1 / 5)) > ALPHA
    assert _chi2_pvalue(np.bincount(colour.ravel(), minlength=256),
                        np.full(256, 1 / 256)) > ALPHA
    image = tf.zeros([8, 8, 3], tf.uint8)
    applied = sum(bool(np.any(rp.cutout_pil(image, tf.constant([i, 1], tf.int64), 0.4,
                                            0.5).numpy())) for i in range(200))
    assert stats.binomtest(applied, 200, 0.5 * (1 - 1 / 256 ** 3)).pvalue > ALPHA


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 3, 3), (5, 2, 3)])
def test_every_op_keeps_tiny_images_whole(shape):
    image = tf.constant(np.random.default_rng(0).integers(0, 256, shape, np.uint8))
    for op in range(len(rp.OPS)):
        out = rp.apply_op(image, tf.constant(op), 9, -1.0, (0.99, 0.0))
        assert out.shape == shape and out.dtype == tf.uint8, rp.OPS[op]
    assert rp.cutout_pil(image, tf.constant([1, 2], tf.int64)).shape == shape
    assert rp.randaugment(image, tf.constant([1, 2], tf.int64)).shape == shape


@pytest.mark.parametrize("kwargs", [{"factor": 1.5}, {"factor": -0.1}, {"probability": 2},
                                    {"factor": "half"}])
def test_cutout_pil_rejects_bad_arguments(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"cutout_pil: {name}"):
        rp.cutout_pil(tf.zeros([4, 4, 3], tf.uint8), tf.constant([0, 0], tf.int64), **kwargs)
