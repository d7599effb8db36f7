"""keras_mld.data.pil_ops against the ``randaugment`` package's own PIL operations on real
photographs (scikit-image's samples, resized small): every operation bit-exact, at every
magnitude and sign."""
import numpy as np
import pytest
import tensorflow as tf

from keras_mld.data import pil_ops
from tests.support import randaugment_package

pytestmark = pytest.mark.tf_only
Image = pytest.importorskip("PIL.Image")
skdata = pytest.importorskip("skimage.data")
randaugment = randaugment_package.load()

_SIZES = {"astronaut": (40, 40), "chelsea": (33, 47), "coffee": (24, 36)}


def _photos():
    for name, (h, w) in _SIZES.items():
        yield Image.fromarray(getattr(skdata, name)()).resize((w, h), Image.BILINEAR)


PHOTOS = list(_photos())


def _ours(fn, img, *args):
    return fn(tf.constant(np.asarray(img)), *args).numpy()


def _run_package(name, magnitude_idx, img, sign=1):
    """The package's own SubPolicy operation ``name`` at its magnitude table entry, its
    random sign pinned to ``sign``: ``(output array, magnitude)``."""
    policy = randaugment.SubPolicy(1.0, name, magnitude_idx, 0.0, "invert", 1)
    op, magnitude = policy.operation1, policy.magnitude1
    choice = randaugment.random.choice
    randaugment.random.choice = lambda seq: sign
    try:
        return np.asarray(op(img, magnitude)), magnitude
    finally:
        randaugment.random.choice = choice


@pytest.mark.parametrize("name,fn", [("invert", pil_ops.invert),
                                     ("autocontrast", pil_ops.autocontrast),
                                     ("equalize", pil_ops.equalize)])
def test_parameterless_ops_are_exact(name, fn):
    for img in PHOTOS:
        want, _ = _run_package(name, 5, img)
        np.testing.assert_array_equal(_ours(fn, img), want)


def test_autocontrast_and_equalize_on_narrow_histograms():
    rng = np.random.default_rng(0)
    for lo, hi in [(90, 91), (10, 200), (128, 129), (5, 6)]:
        x = rng.integers(lo, hi, (9, 11, 3)).astype(np.uint8)
        x[0, 0] = [lo, 0, 255]
        img = Image.fromarray(x)
        for name, fn in [("autocontrast", pil_ops.autocontrast),
                         ("equalize", pil_ops.equalize)]:
            want, _ = _run_package(name, 1, img)
            np.testing.assert_array_equal(_ours(fn, img), want)


@pytest.mark.parametrize("name,fn", [("posterize", pil_ops.posterize),
                                     ("solarize", pil_ops.solarize)])
def test_table_ops_are_exact_at_every_magnitude(name, fn):
    for img in PHOTOS:
        for m in range(1, 10):
            want, magnitude = _run_package(name, m, img)
            np.testing.assert_array_equal(_ours(fn, img, magnitude), want)


@pytest.mark.parametrize("name,fn", [("color", pil_ops.color),
                                     ("contrast", pil_ops.contrast),
                                     ("brightness", pil_ops.brightness),
                                     ("sharpness", pil_ops.sharpness)])
def test_enhancers_are_exact_at_every_magnitude_and_sign(name, fn):
    for img in PHOTOS:
        for m in range(1, 10):
            for sign in (-1, 1):
                want, magnitude = _run_package(name, m, img, sign)
                got = _ours(fn, img, 1.0 + magnitude * sign)
                np.testing.assert_array_equal(got, want, err_msg=f"{name} m={m} s={sign}")


@pytest.mark.parametrize("name,fn", [("shearX", pil_ops.shear_x),
                                     ("shearY", pil_ops.shear_y),
                                     ("translateX", pil_ops.translate_x),
                                     ("translateY", pil_ops.translate_y)])
def test_shear_and_translate_are_exact(name, fn):
    for img in PHOTOS:
        for m in (1, 4, 9):
            for sign in (-1, 1):
                want, magnitude = _run_package(name, m, img, sign)
                size = img.size[0] if name == "translateX" else img.size[1]
                param = magnitude * sign * (size if name.startswith("translate") else 1)
                got = _ours(fn, img, param)
                # translate: nearest on whole pixels; shear: bicubic along one axis only,
                # in Pillow's own float64 arithmetic: both exact
                np.testing.assert_array_equal(got, want, err_msg=f"{name} m={m} s={sign}")
                fill = np.all(got == 128, axis=-1)  # the fill covers the same pixels
                assert np.mean(fill != np.all(want == 128, axis=-1)) <= 0.01


def test_rotate_is_exact():  # Pillow's 16.16 fixed-point nearest sampling, emulated
    for img in PHOTOS:
        for m in range(1, 10):
            want, magnitude = _run_package("rotate", m, img)
            np.testing.assert_array_equal(_ours(pil_ops.rotate, img, magnitude), want,
                                          err_msg=f"rotate m={m}")


def test_fill_box_is_the_package_cutout():
    img = PHOTOS[1]
    state = np.random.get_state()
    np.random.seed(3)
    want, size = _run_package("cutout", 9, img)
    np.random.seed(3)
    cx, cy = np.random.randint(0, img.size[0]), np.random.randint(0, img.size[1])
    np.random.set_state(state)
    half = int(size) // 2
    got = _ours(pil_ops.fill_box, img, max(0, cx - half), max(0, cy - half),
                min(img.size[0], cx + half), min(img.size[1], cy + half), (125, 122, 113))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 3, 3), (3, 3, 3), (5, 2, 3), (4, 3, 3)])
def test_smooth_on_tiny_images_is_pillows(shape):
    from PIL import ImageFilter
    x = np.random.default_rng(1).integers(0, 256, shape, np.uint8)
    want = np.asarray(Image.fromarray(x).filter(ImageFilter.SMOOTH))
    np.testing.assert_array_equal(pil_ops.smooth(tf.constant(x)).numpy(), want)
