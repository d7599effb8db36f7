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
from array import array

import numpy as np

from keras_mld.data.coco import DEFAULT_MAX_CLASSES
from keras_mld.data.multi_hot import MultiHotLabels
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
        task: ``"multilabel"`` (float32 multi-hot, stored by row as a
            :class:`keras_mld.data.multi_hot.MultiHotLabels`: memory bounded by the labels
            in the file) or ``"singlelabel"`` (int class ids; every row must then have
            exactly one label).
        delimiter: field separator; label_separator: separator between labels.
        max_classes: refuse more classes than this (a model's head grows with the classes).
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

    # flat storage (no Python object per row besides its path): a file's rows cost about
    # their bytes; labels are numbered in order of first appearance, renumbered at the end
    paths, lines, ends, ids, first_seen = [], array("q"), array("q"), array("i"), {}
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
                for x in field.split(label_separator):
                    if x.strip():
                        ids.append(first_seen.setdefault(x.strip(), len(first_seen)))
                paths.append(inside_root(base, path, f"load_csv: {csv_file}:{line}",
                                         allow_outside_paths))
                lines.append(line)
                ends.append(len(ids))
    except (_csv.Error, UnicodeDecodeError) as e:  # a field over csv.field_size_limit, NUL
        raise ValueError(f"load_csv: {csv_file}:{line + 1}: not a valid CSV row "
                         f"({type(e).__name__}: {str(e)[:200]})") from None

    seen = list(first_seen)  # label text by id
    names = class_names if class_names is not None else sorted(seen)
    if not names:
        raise ValueError(f"load_csv: {csv_file}: no labels in the file and no class_names "
                         "(a label matrix needs at least one class)")
    if len(names) > max_classes:
        raise ValueError(f"load_csv: {csv_file}: {len(names)} classes, more than "
                         f"max_classes={max_classes} (pass a larger max_classes if meant)")
    column = {name: j for j, name in enumerate(names)}
    indptr = np.concatenate([[0], np.frombuffer(ends, np.int64)]).astype(np.int64)
    ids = np.frombuffer(ids, np.int32)
    row_of = np.repeat(np.arange(len(paths)), np.diff(indptr))

    def row_labels(i):
        return [seen[k] for k in ids[indptr[i]:indptr[i + 1]]]

    unknown = [k for k, label in enumerate(seen) if label not in column]
    if unknown:  # the first row naming one
        at = int(np.flatnonzero(np.isin(ids, unknown))[0])
        raise ValueError(f"load_csv: {csv_file}:{lines[row_of[at]]}: unknown label "
                         f"{seen[ids[at]]!r} (not in class_names)")
    columns = np.array([column[label] for label in seen], np.int32)[ids]
    if task == "singlelabel":
        wrong = np.flatnonzero(np.diff(indptr) != 1)
        if len(wrong):
            raise ValueError(f"load_csv: {csv_file}:{lines[wrong[0]]}: a singlelabel row "
                             f"needs exactly one label, got {row_labels(wrong[0])}")
        return LabelledImages(paths, columns, names, "singlelabel")
    multi_hot = MultiHotLabels.from_pairs(row_of, columns, len(paths), len(names))
    return LabelledImages(paths, multi_hot, names, "multilabel")
