"""Bounded decoding: image sizes read from headers, images over ``max_image_pixels`` and
requests over ``max_batch_size`` refused before decoding (export, training pipeline, predict).

References are independent of the code under test: Pillow's header parse and
``tf.io.decode_image``'s output shape for the sizes; Keras on images decoded by the previous
path (``decode_image`` + float cast + bilinear resize) for the scores.
"""
import importlib.util
import io
import json
import os
import struct

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_mld.data import image as im
from keras_mld.data.pipeline import LabelledImages, SkippedImagesWarning, check_images, \
    make_dataset
from keras_mld.export import export_saved_model

pytestmark = pytest.mark.tf_only

SERVING_LOAD = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "benchmarks", "serving_load.py")


def load_serving_load():
    spec = importlib.util.spec_from_file_location("serving_load", SERVING_LOAD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sl = load_serving_load()


def encode(array, fmt, **kwargs):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kwargs)
    return buf.getvalue()


def pil_size(data):
    with Image.open(io.BytesIO(data)) as image:
        return image.size[1], image.size[0]  # (height, width)


@pytest.fixture(scope="module")
def bomb():
    return sl.png_bomb(16000, 16000)


def _variants():
    rng = np.random.default_rng(0)
    out = []
    for h, w in [(37, 53), (1, 300), (211, 7)]:
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for mode in ("RGB", "L", "RGBA", "P"):
            arr = np.asarray(Image.fromarray(rgb).convert(mode))
            for fmt, kw in [("PNG", {}), ("GIF", {}), ("BMP", {}), ("WEBP", {}),
                            ("WEBP", {"lossless": True}), ("JPEG", {}),
                            ("JPEG", {"progressive": True})]:
                if fmt == "JPEG" and mode in ("RGBA", "P") or fmt == "WEBP" and mode == "P" \
                        or fmt == "GIF" and mode == "P":  # TF: "color index outside of map"
                    continue
                img = Image.fromarray(arr, mode) if mode == "P" else Image.fromarray(arr)
                buf = io.BytesIO()
                img.save(buf, fmt, **kw)
                out.append((f"{fmt}{kw}-{mode}-{h}x{w}", buf.getvalue()))
    return out


def test_header_shape_equals_pillow_and_decoded_shape():
    for name, data in _variants():
        shape = tuple(im.image_shape_from_header(data).numpy())
        decoded = tf.io.decode_image(data, channels=3, expand_animations=False).shape[:2]
        assert shape == pil_size(data) == tuple(decoded), name


def test_unknown_formats_give_minus_one_and_decode_error():
    for data in [b"", b"garbage", b"RIFF\0\0\0\0WEBPXXXX" + bytes(20)]:
        assert tuple(im.image_shape_from_header(data).numpy()) == (-1, -1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
        im.decode_and_resize(b"garbage", (8, 8))


def test_jpeg_xl_is_refused_while_a_limit_is_set():
    """TF decodes JPEG XL too; its size header is bit-packed and not read: refused."""
    for data in [b"\xff\x0a" + bytes(40), b"\0\0\0\x0cJXL \r\n\x87\n" + bytes(40)]:
        assert tuple(im.image_shape_from_header(data).numpy()) == (-2, -2)
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match="JPEG XL images are not accepted with max_image_pixels=40000000"):
            im.decode_and_resize(data, (8, 8))
        with pytest.raises(tf.errors.InvalidArgumentError) as info:  # the decoder's own error
            im.decode_and_resize(data, (8, 8), max_image_pixels=None)
        assert "JPEG XL images are not accepted" not in str(info.value)


def _patched(data, offset, fmt, *values):
    data = bytearray(data)
    data[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    return bytes(data)


def huge_headers(bomb):
    """Small files whose headers declare huge images, one per format, and their declared
    ``(height, width)`` (from the format specifications' field layouts)."""
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    jpeg, bmp = encode(rgb, "JPEG"), encode(rgb, "BMP")
    gif = encode(np.zeros_like(rgb), "GIF")  # a 2-colour palette: no 0x2C byte before the frame
    webp = encode(rgb, "WEBP", lossless=True)
    sof = jpeg.find(b"\xff\xc0")
    # GIF: the first image descriptor (0x2C) after the header, global colour table and
    # extensions; a frame larger than the logical screen (the decoder's canvas grows to it)
    frame = gif.find(b"\x2c\x00\x00\x00\x00")
    vp8l = encode(rgb, "WEBP", lossless=True)
    bits = (16000 - 1) | ((12000 - 1) << 14)
    return {
        "png": (bomb, (16000, 16000)),
        "jpeg": (_patched(jpeg, sof + 5, ">HH", 12000, 9000), (12000, 9000)),
        "bmp": (_patched(bmp, 18, "<ii", 10000, -8000), (8000, 10000)),
        "gif": (_patched(gif, frame + 5, "<HH", 9000, 7000), (7000, 9000)),
        "webp-vp8l": (_patched(vp8l, 21, "<I", bits | (struct.unpack("<I", vp8l[21:25])[0]
                                                      & ~(2 ** 28 - 1))), (12000, 16000)),
        "webp": (webp, (20, 30)),
    }


def test_huge_headers_are_read_and_refused_before_decoding(bomb):
    for name, (data, declared) in huge_headers(bomb).items():
        shape = tuple(im.image_shape_from_header(data).numpy())
        assert shape == declared, name
        if declared[0] * declared[1] > im.DEFAULT_MAX_IMAGE_PIXELS:
            with pytest.raises(tf.errors.InvalidArgumentError,
                               match=rf"{declared[0]} x {declared[1]} pixels.*"
                                     rf"max_image_pixels={im.DEFAULT_MAX_IMAGE_PIXELS}"):
                im.decode_and_resize(data, (8, 8))


def test_limit_is_inclusive_and_validated():
    data = encode(np.zeros((37, 53, 3), np.uint8), "PNG")
    assert im.decode_and_resize(data, (8, 8), max_image_pixels=37 * 53).shape == (8, 8, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_image_pixels=1960"):
        im.decode_and_resize(data, (8, 8), max_image_pixels=37 * 53 - 1)
    assert im.decode_and_resize(data, (8, 8), max_image_pixels=None).shape == (8, 8, 3)
    for bad in (0, -1, 1.5, True, "40M"):
        with pytest.raises(ValueError, match="max_image_pixels must be a positive int"):
            im.decode_and_resize(data, (8, 8), max_image_pixels=bad)


def test_decode_batch_refuses_more_than_max_batch_size():
    data = encode(np.zeros((9, 9, 3), np.uint8), "JPEG")
    fn = tf.function(lambda x: im.decode_batch(x, (8, 8), max_batch_size=2),
                     input_signature=[tf.TensorSpec([None], tf.string)])
    assert fn(tf.constant([data, data])).shape == (2, 8, 8, 3)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="request of 3 images exceeds max_batch_size=2"):
        fn(tf.constant([data] * 3))


def test_decode_batch_refuses_more_than_max_request_bytes():
    # counted over the whole request before any header is read (the GIF walk included)
    data = encode(np.zeros((9, 9, 3), np.uint8), "PNG")
    fn = tf.function(lambda x: im.decode_batch(x, (8, 8), max_request_bytes=2 * len(data)),
                     input_signature=[tf.TensorSpec([None], tf.string)])
    assert fn(tf.constant([data, data])).shape == (2, 8, 8, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"request of {3 * len(data)} "
                       f"bytes exceeds max_request_bytes={2 * len(data)}"):
        fn(tf.constant([data] * 3))
    with pytest.raises(ValueError, match="max_request_bytes must be a positive int"):
        im.decode_batch(tf.constant([data]), (8, 8), max_request_bytes=0)


def test_predict_labels_refuses_files_over_max_request_bytes(tmp_path):
    import keras_mld

    model = keras_mld.build("small_convnet", head="gap", class_names=["a", "b"],
                            input_shape=(16, 16, 3))
    data = encode(np.zeros((20, 20, 3), np.uint8), "PNG")
    (tmp_path / "ok.png").write_bytes(data)
    assert len(model.predict_labels([str(tmp_path / "ok.png"), data])) == 2
    for item, name in ((str(tmp_path / "ok.png"), "ok.png"), (data, f"{len(data)} bytes")):
        with pytest.raises(ValueError, match=f"{name}.*more than max_request_bytes=10"):
            model.predict_labels([item], max_request_bytes=10)


def test_uint8_resize_equals_float_resize():
    """The decode no longer casts to float before resizing: same numbers."""
    data = encode(np.random.default_rng(2).integers(0, 256, (41, 67, 3), np.uint8), "PNG")
    decoded = tf.io.decode_image(data, channels=3, expand_animations=False)
    old = tf.clip_by_value(tf.image.resize(tf.cast(decoded, tf.float32), (20, 24),
                                           method="bilinear", antialias=False), 0.0, 255.0)
    np.testing.assert_array_equal(im.decode_and_resize(data, (20, 24)).numpy(), old.numpy())


# ----------------------------------------------------------------------------- pipeline
def test_pipeline_skips_and_counts_too_large_files(tmp_path, bomb):
    good = encode(np.zeros((16, 16, 3), np.uint8), "PNG")
    paths = []
    for name, data in [("a.png", good), ("bomb.png", bomb), ("b.png", good),
                       ("bad.png", b"\x89PNG\r\n\x1a\nbroken")]:
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    for mode in ("decode", "header"):
        reasons = check_images(paths, mode)
        assert reasons[0] is None and reasons[2] is None, mode
        assert reasons[1].startswith("larger than max_image_pixels=40000000"), reasons[1]
        assert mode == "header" or "16000 x 16000" in reasons[1]  # Pillow stops at its own limit
    assert check_images(paths, "decode")[3] == "cannot be decoded by tf.io.decode_image"
    # a lower limit flags the 16 x 16 images as well (results cached per limit)
    assert check_images(paths[:1], "decode", max_image_pixels=255)[0].startswith(
        "larger than max_image_pixels=255")
    source = LabelledImages(paths, np.eye(4, 2, dtype="float32"), ("x", "y"))
    with pytest.warns(SkippedImagesWarning, match="skipped 2 of 4 images"):
        ds = make_dataset(source, 8, 4, check="decode", check_cache=False)
    assert sum(int(x.shape[0]) for x, _ in ds) == 2
    # check="none": the decode step itself refuses the bomb; the epoch is refilled
    ds = make_dataset(source.subset([0, 1]), 8, 2, check="none", check_cache=False)
    images, _ = next(iter(ds))
    assert images.shape == (2, 8, 8, 3)
    with pytest.raises(ValueError, match="make_dataset: max_image_pixels"):
        make_dataset(source, 8, 4, max_image_pixels=0)


def test_predict_refuses_a_bomb(tmp_path, bomb):
    # keras-mld predict (workflows.predict -> ImageClassifier.predict_labels): the bomb is
    # refused from its header with a ValueError naming the file and the limit
    import keras_mld
    from keras_mld.app import workflows

    model = keras_mld.build("small_convnet", head="gap", class_names=["a", "b"],
                            input_shape=(16, 16, 3))
    model.save(tmp_path / "m.keras")
    (tmp_path / "bomb.png").write_bytes(bomb)
    (tmp_path / "ok.png").write_bytes(encode(np.zeros((20, 20, 3), np.uint8), "PNG"))
    out = workflows.predict(str(tmp_path / "m.keras"), [str(tmp_path / "ok.png")])
    assert len(out) == 1 and out[0][1][0][0] in ("a", "b")
    with pytest.raises(ValueError, match="bomb.png.*max_image_pixels=40000000"):
        workflows.predict(str(tmp_path / "m.keras"), [str(tmp_path / "bomb.png")])


# ----------------------------------------------------------------------------- export
def tiny_model():
    images = keras.Input((32, 32, 3), name="images")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(images)
    x = keras.layers.Conv2D(6, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(images, keras.layers.Dense(4)(x))


def old_decode(data, size):
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    return tf.clip_by_value(tf.image.resize(tf.cast(image, tf.float32), size,
                                            method="bilinear", antialias=False), 0.0, 255.0)


def test_bomb_refused_with_bounded_rss_in_fresh_tf_only_process(tmp_path, bomb):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    path = export_saved_model(model, tmp_path / "m", ["a", "b", "c", "d"], max_batch_size=4)
    with open(os.path.join(path, "assets", "keras_mld.json"), encoding="utf-8") as f:
        meta = json.load(f)
    assert meta["max_image_pixels"] == 40_000_000 and meta["max_batch_size"] == 4
    assert meta["max_request_bytes"] == 32 * 2 ** 20
    rng = np.random.default_rng(3)
    good = [encode(rng.integers(0, 256, (45, 61, 3), np.uint8), "JPEG"),
            encode(rng.integers(0, 256, (30, 20, 3), np.uint8), "PNG")]
    heads = huge_headers(bomb)
    requests = [good, [good[0], bomb], [heads["jpeg"][0]], [heads["gif"][0]],
                [heads["bmp"][0]], [good[1]] * 5]
    report = sl.run_serve_job({"export_dir": path, "requests": requests, "clients": [],
                               "requests_per_client": 0}, str(tmp_path), timeout=600)
    assert report["imported_blocked_modules"] == []
    single = report["single"]
    assert single[0]["error"] is None, single[0]
    ref = tf.sigmoid(model(np.stack([old_decode(b, (32, 32)) for b in good]))).numpy()
    np.testing.assert_allclose(np.asarray(single[0]["scores"]), ref, atol=1e-5, rtol=0)
    for res, (h, w) in zip(single[1:5], [(16000, 16000), (12000, 9000), (7000, 9000),
                                         (8000, 10000)]):
        assert res["error"] == "InvalidArgumentError", res
        assert f"image of {h} x {w} pixels" in res["message"]
        assert "exceeds max_image_pixels=40000000" in res["message"]
    assert single[5]["error"] == "InvalidArgumentError"
    assert "request of 5 images exceeds max_batch_size=4" in single[5]["message"]
    # the issue measured 4.43 GiB for the bomb alone without the guard
    # the child's own peak (VmHWM): its ru_maxrss starts at this pytest parent's peak
    assert report["rss"]["peak_bytes"] < 2 ** 30, report["rss"]


def test_export_limit_arguments_are_validated(tmp_path):
    for kwargs, match in [({"max_image_pixels": 0}, "max_image_pixels"),
                          ({"max_batch_size": -3}, "max_batch_size"),
                          ({"max_batch_size": 2.5}, "max_batch_size")]:
        with pytest.raises(ValueError, match=match):
            export_saved_model(tiny_model(), tmp_path / "m", ["a", "b", "c", "d"], **kwargs)
    assert not (tmp_path / "m").exists()


def test_zero_shot_image_signatures_are_bounded(tmp_path, bomb):
    from keras_mld.export import export_zero_shot_saved_model
    from tests.export.test_zero_shot_export import WORDS, make_model, word_matrix

    path = export_zero_shot_saved_model(make_model(train=False), tmp_path / "z",
                                        vocabulary=(WORDS, word_matrix()), max_batch_size=2)
    loaded = tf.saved_model.load(path)
    vectors = tf.constant(word_matrix()[:3])
    good = encode(np.zeros((20, 20, 3), np.uint8), "PNG")
    ok = loaded.signatures["predict_images"](image_bytes=tf.constant([good]),
                                             label_vectors=vectors)
    assert ok["scores"].shape == (1, 3)
    for name, feeds in [("predict_images", {"label_vectors": vectors}),
                        ("predict_label_names", {"label_names": tf.constant(["dog"])})]:
        fn = loaded.signatures[name]
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match="16000 x 16000 pixels.*max_image_pixels=40000000"):
            fn(image_bytes=tf.constant([bomb]), **feeds)
        with pytest.raises(tf.errors.InvalidArgumentError, match="max_batch_size=2"):
            fn(image_bytes=tf.constant([good] * 3), **feeds)
