"""COCO-format instance annotations (``instances_*.json``) -> multi-label source.

Only ``images`` (``id``, ``file_name``), ``annotations`` (``image_id``, ``category_id``)
and ``categories`` (``id``, ``name``) are read. Each image's label row is the multi-hot
union of its annotations' categories (stored by row, a
:class:`keras_mld.data.multi_hot.MultiHotLabels`: memory bounded by the annotations in the
file, not images x categories), crowd annotations included (as in the official
ML-Decoder/ASL COCO loader); columns follow increasing category id (COCO's 80 ids
1..90 with gaps become columns 0..79) and keep the category names.

Images without any annotation are KEPT with an all-zero row (about 1% of COCO; the
official loader keeps them too). They count as negatives for every class; mAP ignores
classes with no positive, not images. Pass ``drop_empty=True`` to remove them.
"""
import os

from keras_mld.data.multi_hot import MultiHotLabels
from keras_mld.data.pipeline import LabelledImages
from keras_mld.untrusted import inside_root, read_json

DEFAULT_MAX_CLASSES = 10_000  # OpenImages (9,605 classes) fits


def _id(value, what):
    if type(value) is not int:  # not bool, float, inf or a string: json gives ints as int
        raise TypeError(f"{what} must be an integer, got {value!r}"[:200])
    return value


def _str(value, what):
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {value!r}"[:200])
    return value


def _list(data, key, required=True):
    value = data.get(key, None if required else [])
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise TypeError(f"{key!r} must be a list of objects")
    return value


def load_coco(annotation_file, image_dir=None, drop_empty=False, max_classes=DEFAULT_MAX_CLASSES,
              allow_outside_paths=False):
    """Reads a COCO instances json into a multilabel :class:`LabelledImages`.

    Args:
        annotation_file: path of the ``instances_*.json`` file.
        image_dir: folder that ``file_name`` is relative to; defaults to the json's folder.
        drop_empty: drop images that have no annotation (default: keep, all-zero labels).
        max_classes: refuse more categories than this (a model's head grows with them).
        allow_outside_paths: accept ``file_name`` values that are absolute or leave
            ``image_dir`` through ``..`` (refused by default, naming the image).

    Raises:
        ValueError: missing file or folder, malformed json (deep nesting, non-integer ids,
            entries of the wrong type), duplicate image ids, an annotation naming an unknown
            category or image id, too many categories, a path outside ``image_dir``.
    """
    annotation_file = os.fspath(annotation_file)
    if not os.path.isfile(annotation_file):
        raise ValueError(f"load_coco: annotation file not found: {annotation_file!r}")
    if image_dir is None:
        image_dir = os.path.dirname(os.path.abspath(annotation_file))
    image_dir = os.fspath(image_dir)
    if not os.path.isdir(image_dir):
        raise ValueError(f"load_coco: image_dir not found: {image_dir!r}")
    data = read_json(annotation_file, "load_coco")
    try:
        if not isinstance(data, dict):
            raise TypeError("the top level must be an object")
        categories = sorted((_id(c.get("id"), "category id"), _str(c.get("name"), "category name"))
                            for c in _list(data, "categories"))
        images = [(_id(im.get("id"), "image id"), _str(im.get("file_name"), "file_name"))
                  for im in _list(data, "images")]
        annotations = [(a.get("id"), _id(a.get("image_id"), "image_id"),
                        _id(a.get("category_id"), "category_id"))
                       for a in _list(data, "annotations", required=False)]
    except TypeError as e:
        raise ValueError(f"load_coco: {annotation_file!r} is not a COCO instances file "
                         f"({e})") from None
    if not categories:
        raise ValueError(f"load_coco: {annotation_file!r} has no categories")
    if len(categories) > max_classes:
        raise ValueError(f"load_coco: {annotation_file!r} has {len(categories)} categories, "
                         f"more than max_classes={max_classes}")

    column = {cid: j for j, (cid, _) in enumerate(categories)}
    if len(column) != len(categories):
        raise ValueError(f"load_coco: {annotation_file!r} has duplicate category ids")
    row = {iid: i for i, (iid, _) in enumerate(images)}
    if len(row) != len(images):
        raise ValueError(f"load_coco: {annotation_file!r} has duplicate image ids")

    rows = [[] for _ in images]
    for ann_id, image_id, category_id in annotations:
        if category_id not in column:
            raise ValueError(f"load_coco: {annotation_file!r}: annotation {ann_id} refers to "
                             f"unknown category_id {category_id}")
        if image_id not in row:
            raise ValueError(f"load_coco: {annotation_file!r}: annotation {ann_id} refers to "
                             f"unknown image_id {image_id}")
        rows[row[image_id]].append(column[category_id])
    labels = MultiHotLabels.from_rows(rows, len(categories))  # memory: the labels present

    paths = [inside_root(image_dir, name, f"load_coco: {annotation_file!r}: image {iid}",
                         allow_outside_paths) for iid, name in images]
    source = LabelledImages(paths, labels, [name for _, name in categories], "multilabel")
    if drop_empty:
        source = source.subset(labels.any(axis=1))
    return source
