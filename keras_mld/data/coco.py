"""COCO-format instance annotations (``instances_*.json``) -> multi-label source.

Only ``images`` (``id``, ``file_name``), ``annotations`` (``image_id``, ``category_id``)
and ``categories`` (``id``, ``name``) are read. Each image's label row is the multi-hot
union of its annotations' categories, crowd annotations included (as in the official
ML-Decoder/ASL COCO loader); columns follow increasing category id (COCO's 80 ids
1..90 with gaps become columns 0..79) and keep the category names.

Images without any annotation are KEPT with an all-zero row (about 1% of COCO; the
official loader keeps them too). They count as negatives for every class; mAP ignores
classes with no positive, not images. Pass ``drop_empty=True`` to remove them.
"""
import json
import os

import numpy as np

from keras_mld.data.pipeline import LabelledImages


def load_coco(annotation_file, image_dir=None, drop_empty=False):
    """Reads a COCO instances json into a multilabel :class:`LabelledImages`.

    Args:
        annotation_file: path of the ``instances_*.json`` file.
        image_dir: folder that ``file_name`` is relative to; defaults to the json's folder.
        drop_empty: drop images that have no annotation (default: keep, all-zero labels).

    Raises:
        ValueError: missing file or folder, malformed json, duplicate image ids,
            or an annotation naming an unknown category or image id.
    """
    annotation_file = os.fspath(annotation_file)
    if not os.path.isfile(annotation_file):
        raise ValueError(f"load_coco: annotation file not found: {annotation_file!r}")
    if image_dir is None:
        image_dir = os.path.dirname(os.path.abspath(annotation_file))
    image_dir = os.fspath(image_dir)
    if not os.path.isdir(image_dir):
        raise ValueError(f"load_coco: image_dir not found: {image_dir!r}")
    try:
        with open(annotation_file, encoding="utf-8") as f:
            data = json.load(f)
        categories = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
        images = [(int(im["id"]), str(im["file_name"])) for im in data["images"]]
        annotations = [(a.get("id"), int(a["image_id"]), int(a["category_id"]))
                       for a in data.get("annotations", [])]
    except (ValueError, KeyError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"load_coco: {annotation_file!r} is not a COCO instances file "
                         f"({type(e).__name__}: {e})") from None

    column = {cid: j for j, (cid, _) in enumerate(categories)}
    if len(column) != len(categories):
        raise ValueError(f"load_coco: {annotation_file!r} has duplicate category ids")
    row = {iid: i for i, (iid, _) in enumerate(images)}
    if len(row) != len(images):
        raise ValueError(f"load_coco: {annotation_file!r} has duplicate image ids")

    labels = np.zeros((len(images), len(categories)), np.float32)
    for ann_id, image_id, category_id in annotations:
        if category_id not in column:
            raise ValueError(f"load_coco: {annotation_file!r}: annotation {ann_id} refers to "
                             f"unknown category_id {category_id}")
        if image_id not in row:
            raise ValueError(f"load_coco: {annotation_file!r}: annotation {ann_id} refers to "
                             f"unknown image_id {image_id}")
        labels[row[image_id], column[category_id]] = 1.0

    paths = [os.path.normpath(os.path.join(image_dir, name)) for _, name in images]
    source = LabelledImages(paths, labels, [name for _, name in categories], "multilabel")
    if drop_empty:
        source = source.subset(labels.any(axis=1))
    return source
