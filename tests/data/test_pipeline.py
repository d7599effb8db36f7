"""make_dataset / check_images: exact pixels, skipping bad files, determinism, augmentation."""
import os

import numpy as np
import pytest
from PIL import Image

from keras_mld.data import checks
from keras_mld.data.pipeline import LabelledImages, SkippedImagesWarning, check_images, \
    make_dataset

pytestmark = pytest.mark.tf_only


def _write(tmp_path, n, size=16, fmt="PNG", seed=0):
    rng = np.random.default_rng(seed)
    arrays, paths = [], []
    for i in range(n):
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        p = str(tmp_path / f"img{i}.{fmt.lower()}")
        Image.fromarray(a).save(p, format=fmt)
        arrays.append(a)
        paths.append(p)
    return arrays, paths


def _source(paths, num_classes=3):
    labels = np.eye(num_classes, dtype=np.float32)[np.arange(len(paths)) % num_classes]
    labels[:, 0] = 1.0
    return LabelledImages(paths, labels, [f"c{j}" for j in range(num_classes)])


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_eval_pixels_and_labels_exact(tmp_path):
    arrays, paths = _write(tmp_path, 5)
    source = _source(paths)
    x, y = _collect(make_dataset(source, 16, 2, check_cache=False))
    assert x.dtype == np.float32 and x.shape == (5, 16, 16, 3)
    np.testing.assert_array_equal(x, np.stack(arrays).astype(np.float32))
    np.testing.assert_array_equal(y, source.labels)


def test_resize_matches_numpy_box_average(tmp_path):
    # bilinear, half-pixel centres, no antialias: a 2x downscale samples at 2i+0.5,
    # i.e. the mean of each 2x2 block
    arrays, paths = _write(tmp_path, 2, size=32)
    x, _ = _collect(make_dataset(_source(paths), (16, 16), 2, check_cache=False))
    ref = np.stack(arrays).astype(np.float64).reshape(2, 16, 2, 16, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(x, ref, atol=1e-3)


def test_corrupt_and_missing_images_skipped_and_counted(tmp_path):
    arrays, paths = _write(tmp_path, 4)
    good = open(paths[0], "rb").read()
    truncated_png = tmp_path / "truncated.png"
    truncated_png.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image" * 10)
    jpeg = tmp_path / "ok.jpg"
    Image.fromarray(arrays[0]).save(jpeg, quality=95)
    truncated_jpg = tmp_path / "truncated.jpg"
    truncated_jpg.write_bytes(jpeg.read_bytes()[:300])
    missing = tmp_path / "missing.png"
    all_paths = [paths[0], str(truncated_png), paths[1], str(garbage), paths[2],
                 str(missing), str(truncated_jpg), paths[3]]
    source = _source(all_paths, num_classes=8)
    source.labels[:] = np.eye(8, dtype=np.float32)  # label = position, to identify survivors

    reasons = check_images(all_paths)
    assert reasons[0] is None and reasons[5] == "missing"
    assert reasons[3].startswith("not a JPEG") and "decoded" in reasons[1]
    assert "decoded" in reasons[6]
    with pytest.warns(SkippedImagesWarning, match=r"skipped 4 of 8 images") as record:
        ds = make_dataset(source, 16, 3, check_cache=False)
    assert len(record) == 1 and "missing.png" in str(record[0].message)
    x, y = _collect(ds)
    np.testing.assert_array_equal(np.argmax(y, axis=1), [0, 2, 4, 7])
    np.testing.assert_array_equal(x, np.stack(arrays).astype(np.float32))


def test_image_failing_after_the_check_is_replaced_not_fatal(tmp_path):
    arrays, paths = _write(tmp_path, 5)
    (tmp_path / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken since the check")
    source = LabelledImages(paths, np.eye(5, dtype=np.float32), list("abcde"))
    ds = make_dataset(source, 16, 2, check="none", check_cache=False)
    assert ds.cardinality().numpy() == 3
    x, y = _collect(ds)
    assert len(x) == 5
    np.testing.assert_array_equal(np.argmax(y, axis=1), [0, 1, 3, 4, 0])  # refilled
    np.testing.assert_array_equal(x[:4], np.stack(arrays)[[0, 1, 3, 4]].astype(np.float32))


def test_check_cache_file_reused_and_invalidated(tmp_path, monkeypatch):
    _, paths = _write(tmp_path, 3)
    cache = str(tmp_path / "checks.json")
    assert check_images(paths, cache_file=cache) == [None] * 3
    assert os.path.isfile(cache)
    monkeypatch.setattr(checks, "_MEMO", {})

    def no_decode(paths):
        raise AssertionError(f"decoded again: {paths}")

    monkeypatch.setattr(checks, "_decode_failures", no_decode)
    assert check_images(paths, cache_file=cache) == [None] * 3  # from the file
    with open(paths[1], "r+b") as f:  # changed file: checked again
        f.truncate(40)
    monkeypatch.undo()
    monkeypatch.setattr(checks, "_MEMO", {})
    reasons = check_images(paths, cache_file=cache)
    assert reasons[0] is None and "decoded" in reasons[1]


def test_same_seed_same_batches_and_new_augmentation_each_epoch(tmp_path):
    _, paths = _write(tmp_path, 8, size=24)
    source = _source(paths)

    def make(seed):
        return make_dataset(source, 24, 4, training=True, augment="randaugment", seed=seed,
                            check_cache=False)

    ds = make(7)
    epoch1, epoch2 = _collect(ds), _collect(ds)
    again = _collect(make(7))
    np.testing.assert_array_equal(epoch1[0], again[0])
    np.testing.assert_array_equal(epoch1[1], again[1])
    assert not np.array_equal(epoch1[0], epoch2[0])
    assert not np.array_equal(epoch1[0], _collect(make(8))[0])
    assert epoch1[0].min() >= 0.0 and epoch1[0].max() <= 255.0


def test_augmentation_only_in_training(tmp_path):
    arrays, paths = _write(tmp_path, 8, size=24)
    source = LabelledImages(paths, np.eye(8, dtype=np.float32), [str(i) for i in range(8)])
    originals = np.stack(arrays).astype(np.float32)
    x, y = _collect(make_dataset(source, 24, 4, training=False, augment="randaugment",
                                 seed=0, check_cache=False))
    np.testing.assert_array_equal(x, originals)
    x, y = _collect(make_dataset(source, 24, 4, training=True, augment="randaugment",
                                 seed=0, check_cache=False))
    assert sorted(np.argmax(y, axis=1)) == list(range(8))
    changed = [not np.array_equal(x[i], originals[np.argmax(y[i])]) for i in range(8)]
    assert sum(changed) >= 6


def test_light_augmentation_is_exact_horizontal_flip(tmp_path):
    arrays, paths = _write(tmp_path, 16, size=8)
    source = LabelledImages(paths, np.eye(16, dtype=np.float32), [str(i) for i in range(16)])
    x, y = _collect(make_dataset(source, 8, 4, training=True, augment="light", seed=1,
                                 check_cache=False))
    assert sorted(np.argmax(y, axis=1)) == list(range(16))  # a permutation, none dropped
    flipped = 0
    for image, label in zip(x, y):
        original = arrays[int(np.argmax(label))].astype(np.float32)
        if np.array_equal(image, original[:, ::-1]):
            flipped += 1
        else:
            np.testing.assert_array_equal(image, original)
    assert 0 < flipped < 16


def test_shuffle_cache_and_drop_remainder(tmp_path):
    _, paths = _write(tmp_path, 10, size=8)
    source = LabelledImages(paths, np.arange(10) % 3, ["a", "b", "c"], task="singlelabel")
    plain = make_dataset(source, 8, 4, check_cache=False)
    x0, y0 = _collect(plain)
    assert y0.dtype == np.int32 and len(y0) == 10
    for cache in (True, str(tmp_path / "cache" / "data")):
        ds = make_dataset(source, 8, 4, training=True, seed=3, cache=cache, check_cache=False)
        assert [len(b) for b, _ in ds] == [4, 4]  # drop_remainder in training
        x1, _ = _collect(make_dataset(source, 8, 4, training=True, seed=3, cache=cache,
                                      check_cache=False))
        x2, _ = _collect(make_dataset(source, 8, 4, training=True, seed=3, cache=cache,
                                      check_cache=False))
        np.testing.assert_array_equal(x1, x2)
        rows = {r.tobytes() for r in x0}
        assert all(r.tobytes() in rows for r in x1)
    x3, _ = _collect(make_dataset(source, 8, 4, shuffle=True, seed=3, check_cache=False))
    assert not np.array_equal(x3, x0)
    assert sorted(r.tobytes() for r in x3) == sorted(r.tobytes() for r in x0)


@pytest.mark.parametrize("kwargs, match", [
    ({"image_size": 0}, "image_size"),
    ({"image_size": (16,)}, "image_size"),
    ({"image_size": "big"}, "image_size"),
    ({"batch_size": 0}, "batch_size"),
    ({"augment": "heavy"}, "augment"),
    ({"check": "maybe"}, "check"),
    ({"seed": "x"}, "seed"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    _, paths = _write(tmp_path, 1)
    args = dict(source=_source(paths), image_size=16, batch_size=2, check_cache=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_dataset(**args)


def test_bad_source_and_nothing_usable(tmp_path):
    with pytest.raises(ValueError, match="LabelledImages"):
        make_dataset(["a.png"], 16, 2)
    with pytest.raises(ValueError, match="shape"):
        LabelledImages(["a.png"], np.zeros((1, 2)), ["a", "b", "c"])
    _, paths = _write(tmp_path, 3)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        make_dataset(_source(paths), 16, 4, training=True, check_cache=False)
    source = _source([str(tmp_path / "nope.png")])
    with pytest.warns(SkippedImagesWarning), pytest.raises(ValueError, match="no usable"):
        make_dataset(source, 16, 2, check_cache=False)

