"""CSV image lists ``path,label1|label2|...`` -> multi-label (or single-label) source.

Format (standard ``csv`` quoting, so a path containing a comma can be quoted):

* one row per image: the image path, then its labels joined by ``|`` (an empty label
  field, or no second field, means "no label": an all-zero row); blank lines are skipped;
* the header is optional: the first row is taken as a header when its first field is
  one of ``path``, ``file``, ``filename``, ``file_name``, ``image``, ``image_path``
  (case-insensitive); pass ``header=True``/``False`` to decide explicitly;
* relative paths are resolved against the CSV file's folder (or ``image_dir``);
* classes: ``class_names`` if given (then any other label is an error naming file, line
  and label), else the sorted union of all labels.
"""
import csv as _csv
import os

import numpy as np

from keras_mld.data.coco import DEFAULT_MAX_CLASSES
from keras_mld.data.pipeline import LabelledImages
from keras_mld.metadata import TASKS
from keras_mld.untrusted import inside_root

HEADER_NAMES = ("path", "file", "filename", "file_name", "image", "image_path")


def load_csv(csv_file, class_names=None, image_dir=None, header=None, task="multilabel",
             delimiter=",", label_separator="|", max_classes=DEFAULT_MAX_CLASSES,
             allow_outside_paths=False):
    """Reads a ``path,label1|label2`` CSV into a :class:`LabelledImages`.

    Args:
        csv_file: path of the CSV file (UTF-8).
        class_names: the class list (label-column order); default: sorted union of labels.
        image_dir: folder relative paths are resolved against; default: the CSV's folder.
        header: None (auto-detect, see module doc), True or False.
        task: ``"multilabel"`` (float32 multi-hot) or ``"singlelabel"`` (int class ids;
            every row must then have exactly one label).
        delimiter: field separator; label_separator: separator between labels.
        max_classes: refuse more classes than this (the multi-hot matrix is dense: rows x
            classes float32; a small CSV of many distinct labels would take gigabytes).
        allow_outside_paths: accept absolute paths and paths that leave the image folder
            through ``..`` (refused by default, naming the line).

    Raises:
        ValueError: missing file, malformed row (a field over the csv module's limit, bad
            UTF-8, a NUL byte), unknown label (when ``class_names`` is given), a row without
            exactly one label for ``task="singlelabel"``, too many classes, a path outside
            the image folder; the message names the file and line.
    """
    csv_file = os.fspath(csv_file)
    if task not in TASKS:
        raise ValueError(f"load_csv: task must be one of {TASKS}, got {task!r}")
    if not os.path.isfile(csv_file):
        raise ValueError(f"load_csv: CSV file not found: {csv_file!r}")
    base = os.fspath(image_dir) if image_dir is not None else \
        os.path.dirname(os.path.abspath(csv_file))
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(set(class_names)) != len(class_names):
            raise ValueError("load_csv: class_names has duplicates")

    rows = []  # (line, path, [labels])
    line = 0
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as f:
            reader = _csv.reader(f, delimiter=delimiter)
            first = True
            for fields in reader:
                line = reader.line_num
                if not fields or all(not x.strip() for x in fields):
                    continue
                if first:
                    first = False
                    is_header = (fields[0].strip().lower() in HEADER_NAMES if header is None
                                 else bool(header))
                    if is_header:
                        continue
                if len(fields) > 2:
                    raise ValueError(f"load_csv: {csv_file}:{line}: expected 'path,labels', "
                                     f"got {len(fields)} fields")
                path = fields[0].strip()
                if not path:
                    raise ValueError(f"load_csv: {csv_file}:{line}: empty path")
                field = fields[1] if len(fields) > 1 else ""
                labels = [x.strip() for x in field.split(label_separator) if x.strip()]
                rows.append((line, inside_root(base, path, f"load_csv: {csv_file}:{line}",
                                               allow_outside_paths), labels))
    except (_csv.Error, UnicodeDecodeError) as e:  # a field over csv.field_size_limit, NUL
        raise ValueError(f"load_csv: {csv_file}:{line + 1}: not a valid CSV row "
                         f"({type(e).__name__}: {str(e)[:200]})") from None

    names = class_names if class_names is not None else \
        sorted({label for _, _, labels in rows for label in labels})
    if not names:
        raise ValueError(f"load_csv: {csv_file}: no labels in the file and no class_names "
                         "(a label matrix needs at least one class)")
    if len(names) > max_classes:
        raise ValueError(f"load_csv: {csv_file}: {len(names)} classes, more than "
                         f"max_classes={max_classes} (pass a larger max_classes if meant)")
    column = {name: j for j, name in enumerate(names)}
    for line, _, labels in rows:
        for label in labels:
            if label not in column:
                raise ValueError(f"load_csv: {csv_file}:{line}: unknown label {label!r} "
                                 f"(not in class_names)")
    paths = [path for _, path, _ in rows]
    if task == "singlelabel":
        for line, _, labels in rows:
            if len(labels) != 1:
                raise ValueError(f"load_csv: {csv_file}:{line}: a singlelabel row needs "
                                 f"exactly one label, got {labels}")
        ids = np.array([column[labels[0]] for _, _, labels in rows], np.int32)
        return LabelledImages(paths, ids, names, "singlelabel")
    multi_hot = np.zeros((len(rows), len(names)), np.float32)
    for i, (_, _, labels) in enumerate(rows):
        for label in labels:
            multi_hot[i, column[label]] = 1.0
    return LabelledImages(paths, multi_hot, names, "multilabel")

