"""The papers' pipelines: each runs its pieces in its paper's order (the pieces are tested
against the randaugment package and Pillow in test_pil_ops / test_randaugment_policy), the
zoo recipes name theirs, and make_dataset runs them."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_mld.data import paper_augment as pa
from keras_mld.data.augment import AUGMENTS, make_augmenter
from keras_mld.data.pipeline import LabelledImages, make_dataset
from keras_mld.data.randaugment_policy import cutout_pil, randaugment
from keras_mld.recipes import list_recipes, load_recipe

pytestmark = pytest.mark.tf_only


def _image(h=20, w=24, seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8))


def _fold(seed, k):
    return tf.random.experimental.stateless_fold_in(seed, k)


def _flipped(seed):
    probe = tf.constant([[[0], [1]]], tf.uint8)
    return bool(pa._flip(probe, seed).numpy()[0, 0, 0] == 1)


@pytest.mark.parametrize("k", range(6))
def test_orders_are_the_papers(k):
    image, seed = _image(seed=k), tf.constant([k, 42], tf.int64)
    cut = cutout_pil(image, _fold(seed, 101), factor=0.5)
    np.testing.assert_array_equal(pa.mldecoder(image, seed),
                                  randaugment(cut, _fold(seed, 102)))  # cutout first, no flip
    want = cutout_pil(randaugment(image, _fold(seed, 102)), _fold(seed, 101), factor=0.4,
                      probability=0.5).numpy()
    np.testing.assert_array_equal(pa.aam(image, seed), want[:, ::-1] if _flipped(seed)
                                  else want)
    np.testing.assert_array_equal(pa.query2label(image, seed),
                                  randaugment(image, _fold(seed, 102)))


def test_aam_flips_and_cuts_half_the_time():
    n = 400
    image = tf.zeros([6, 6, 3], tf.uint8)
    probe = tf.constant([[[0], [1]]], tf.uint8)
    ds = tf.data.Dataset.range(n).map(lambda k: tf.stack([k, tf.constant(3, tf.int64)]))
    ds = ds.map(lambda seed: (pa._flip(probe, seed)[0, 0, 0],
                              tf.reduce_max(cutout_pil(image, seed, 0.4, 0.5))))
    flips, cuts = (v.numpy() for v in next(iter(ds.batch(n))))
    for hits in (np.sum(flips == 1), np.sum(cuts > 0)):  # binomial(400, 0.5): 4.5 sigma
        assert abs(int(hits) - n // 2) <= 45


def test_ctran_crops_at_the_papers_scales():
    image = _image(64, 64)
    full = tf.image.resize(image, [64, 64], antialias=True)
    seen = set()
    for k in range(40):
        seed = tf.constant([k, 5], tf.int64)
        choice = int(tf.random.stateless_uniform((), _fold(seed, 104), maxval=5,
                                                 dtype=tf.int32))
        seen.add(choice)
        out = pa.ctran(image, seed).numpy()
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8
        if choice == 0:  # the 640-of-640 crop is the whole image: only the flip remains
            want = np.round(full.numpy()).astype(np.uint8)
            assert np.array_equal(out, want) or np.array_equal(out, want[:, ::-1])
    assert seen == set(range(5))


def test_recipes_name_their_papers_pipeline():
    for name in list_recipes():
        augment = load_recipe(name)["data"].get("augment")
        assert augment in AUGMENTS, name
        if name.startswith("aam_"):
            assert augment == "aam"
    assert load_recipe("mldecoder_coco")["data"]["augment"] == "mldecoder"


def test_make_dataset_runs_the_recipes_pipeline(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        path = str(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), np.uint8)).save(path)
        paths.append(path)
    source = LabelledImages(paths, np.eye(4, dtype=np.float32), list("abcd"))
    ds = make_dataset(source, 16, 4, training=True, augment="mldecoder", seed=3,
                      check_cache=False)
    x, y = next(iter(ds))
    x, order = x.numpy(), np.argmax(y.numpy(), axis=1)
    originals = np.stack([np.asarray(Image.open(paths[i]).resize((16, 16))) for i in order])
    assert x.shape == (4, 16, 16, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x, np.round(x))  # uint8 values
    assert not np.array_equal(x, originals.astype(np.float32))  # CutoutPIL always draws
    apply = make_augmenter("mldecoder", (16, 16))
    image = np.random.default_rng(1).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    seed = tf.constant([2, 9], tf.int64)
    np.testing.assert_array_equal(
        apply(image, seed).numpy(),
        pa.mldecoder(tf.cast(np.round(image), tf.uint8), seed).numpy().astype(np.float32))


def test_augment_benchmark_tiny_run(capsys):
    """benchmarks/augment.py runs and prints one row per pipeline (no timing asserted)."""
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "augment.py")
    spec = importlib.util.spec_from_file_location("augment_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--size", "24", "--images", "4", "--reps", "1",
                 "--pipelines", "mldecoder,none"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["mldecoder", "none"]
