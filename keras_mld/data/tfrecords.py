"""A labelled image dataset as TFRecord shards: :func:`pack_tfrecords` writes them,
:func:`load_tfrecords` reads the folder back into a :class:`TFRecordSource` that
:func:`keras_mld.data.make_dataset` turns into the same batches as the file list.

Why: a file list is sharded across workers by ``DATA`` (every worker reads and decodes
every image and keeps its part of each batch). TFRecord shards are read through
``tf.data.TFRecordDataset``, so ``tf.distribute`` shards them by ``FILE``: each worker
reads only its shards (use at least as many shards as workers, a multiple of their
number for equal parts), and reads few large files instead of many small ones.

Folder layout (written atomically: a hidden folder beside ``out`` renamed into place)::

    out/dataset.json                       sidecar: format, version, task, class_names,
                                           num_records, max_record_bytes,
                                           shards [{"file", "records", "bytes"}]
    out/shard-00000-of-00004.tfrecord      tf.train.Example records:
        image    bytes  the image file's bytes, as they are on disk (JPEG/PNG/...)
        labels   int64  the positive class ids (sparse multi-hot; singlelabel: the id)
        ignored  int64  class ids labelled -1 (ignored, partial labels)
        path     bytes  the source path (for messages)

Records are spread over the shards round-robin in the source's order, so shard ``k``
holds records ``k, k + S, k + 2S, ...``. The folder is untrusted input when read back:
the sidecar is parsed with the bounded JSON reader, shard names must stay inside the
folder, and every record header is walked before training (length within
``max_record_bytes`` and within the file, record counts as declared); any violation is
a ``ValueError`` naming the file.
"""
import dataclasses
import json
import os
import struct

import numpy as np
import tensorflow as tf

from keras_mld.atomic import atomic_path
from keras_mld.metadata import TASKS
from keras_mld.untrusted import inside_root, read_json

__all__ = ["FORMAT", "SIDECAR", "DEFAULT_MAX_RECORD_BYTES", "TFRecordSource", "pack_tfrecords",
           "load_tfrecords", "parse_record"]

FORMAT = "keras_mld.tfrecords"
SIDECAR = "dataset.json"
VERSION = 1
DEFAULT_MAX_RECORD_BYTES = 64 * 2 ** 20  # one encoded image and its labels
MAX_SIDECAR_BYTES = 64 * 2 ** 20


@dataclasses.dataclass(eq=False)
class TFRecordSource:
    """A folder of TFRecord shards written by :func:`pack_tfrecords` (see the module doc).

    Attributes:
        files: absolute shard paths (tuple of str).
        class_names: the ``N`` class names.
        task: ``"multilabel"`` or ``"singlelabel"``.
        num_records: the number of records (images) over all shards.
        max_record_bytes: the largest record the reader accepts.
    """

    files: tuple
    class_names: tuple
    task: str = "multilabel"
    num_records: int = 0
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES

    def __len__(self):
        return self.num_records

    @property
    def num_classes(self):
        return len(self.class_names)


def _example(data, positives, ignored, path):
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
        "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=positives)),
        "ignored": tf.train.Feature(int64_list=tf.train.Int64List(value=ignored)),
        "path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode("utf-8")])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def pack_tfrecords(source, out, num_shards=8, overwrite=False,
                   max_record_bytes=DEFAULT_MAX_RECORD_BYTES):
    """Writes ``source`` (a :class:`keras_mld.data.LabelledImages`) as TFRecord shards.

    Args:
        source: the labelled images (``load_csv``, ``load_coco``, ``load_image_folder``).
        out: the folder to create (written aside and renamed into place).
        num_shards: int >= 1; at least the number of workers that will read it.
        overwrite: replace an existing ``out``.
        max_record_bytes: refuse an image file larger than this (its record would be).

    Returns:
        the :class:`TFRecordSource` of the written folder.
    """
    # duck-typed (keras_mld.data.pipeline imports this module, not the other way round)
    if not all(hasattr(source, a) for a in ("paths", "labels", "class_names", "task")):
        raise ValueError("pack_tfrecords: source must be a LabelledImages (load_csv, "
                         f"load_coco, load_image_folder), got {type(source).__name__}")
    if isinstance(num_shards, bool) or not isinstance(num_shards, (int, np.integer)) \
            or not 1 <= num_shards <= max(1, len(source)):
        raise ValueError(f"pack_tfrecords: num_shards must be an int in [1, {len(source)}] "
                         f"(one image at least per shard), got {num_shards!r}")
    out = os.fspath(out)
    if os.path.exists(out) and not overwrite:
        raise ValueError(f"pack_tfrecords: {out!r} exists; pass overwrite=True to replace it")
    names = [f"shard-{k:05d}-of-{num_shards:05d}.tfrecord" for k in range(num_shards)]
    shards = [{"file": n, "records": 0, "bytes": 0} for n in names]
    with atomic_path(out, overwrite=overwrite, directory=True, caller="pack_tfrecords") as tmp:
        writers = [tf.io.TFRecordWriter(os.path.join(tmp, n)) for n in names]
        try:
            for i, path in enumerate(source.paths):
                size = os.path.getsize(path)
                if size > max_record_bytes:
                    raise ValueError(f"pack_tfrecords: {path!r} has {size} bytes, more than "
                                     f"max_record_bytes={max_record_bytes}")
                with open(path, "rb") as f:
                    data = f.read()
                if source.task == "multilabel":
                    row = source.labels[i]
                    pos, ign = np.flatnonzero(row == 1), np.flatnonzero(row == -1)
                else:
                    pos, ign = np.asarray([source.labels[i]]), np.zeros(0, np.int64)
                record = _example(data, pos.tolist(), ign.tolist(), path)
                k = i % num_shards
                writers[k].write(record)
                shards[k]["records"] += 1
                shards[k]["bytes"] += len(record)
        finally:
            for w in writers:
                w.close()
        with open(os.path.join(tmp, SIDECAR), "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "version": VERSION, "task": source.task,
                       "class_names": list(source.class_names), "num_records": len(source),
                       "max_record_bytes": int(max_record_bytes), "shards": shards}, f,
                      indent=1)
    return load_tfrecords(out)


def _walk_records(path, expected, max_record_bytes):
    """Walks the record headers of a TFRecord file (8-byte length, 4-byte CRC, data, 4-byte
    CRC) without reading the data; ValueError naming the file on a bad length or count."""
    size = os.path.getsize(path)
    count, pos = 0, 0
    with open(path, "rb") as f:
        while pos < size:
            if size - pos < 16:
                raise ValueError(f"load_tfrecords: {path!r}: truncated record header at byte {pos}")
            f.seek(pos)
            (length,) = struct.unpack("<Q", f.read(8))
            if length > max_record_bytes:
                raise ValueError(f"load_tfrecords: {path!r}: record {count} declares {length} "
                                 f"bytes, more than max_record_bytes={max_record_bytes}")
            pos += 16 + length
            if pos > size:
                raise ValueError(f"load_tfrecords: {path!r}: record {count} runs past the end "
                                 "of the file (truncated or not a TFRecord file)")
            count += 1
            if count > expected:
                break
    if count != expected:
        raise ValueError(f"load_tfrecords: {path!r} holds {'more than ' if count > expected else ''}"
                         f"{count} records, {SIDECAR} declares {expected}")


def _field(meta, key, kind, where):
    value = meta.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"load_tfrecords: {where}: {key!r} must be {kind.__name__}, "
                         f"got {value!r}")
    return value


def load_tfrecords(folder, max_record_bytes=None):
    """The :class:`TFRecordSource` of a folder written by :func:`pack_tfrecords`.

    ``max_record_bytes``: the largest record accepted (default: the sidecar's value, at
    most :data:`DEFAULT_MAX_RECORD_BYTES`). Raises ``ValueError`` naming the file for a
    missing or malformed ``dataset.json``, a shard outside the folder or missing, a
    record longer than the bound or past the end of its file, or record counts that
    differ from the sidecar's.
    """
    folder = os.fspath(folder)
    sidecar = os.path.join(folder, SIDECAR)
    if not os.path.isfile(sidecar):
        raise ValueError(f"load_tfrecords: no {SIDECAR} in {folder!r} (write the folder with "
                         "keras-mld data pack / keras_mld.data.pack_tfrecords)")
    if os.path.getsize(sidecar) > MAX_SIDECAR_BYTES:
        raise ValueError(f"load_tfrecords: {sidecar!r} is larger than {MAX_SIDECAR_BYTES} bytes")
    meta = read_json(sidecar, "load_tfrecords")
    where = repr(sidecar)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"load_tfrecords: {where} is not a {FORMAT} version {VERSION} sidecar")
    task = meta.get("task")
    if task not in TASKS:
        raise ValueError(f"load_tfrecords: {where}: task must be one of {TASKS}, got {task!r}")
    names = _field(meta, "class_names", list, where)
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ValueError(f"load_tfrecords: {where}: class_names must be distinct strings")
    declared = _field(meta, "max_record_bytes", int, where)
    limit = min(declared, DEFAULT_MAX_RECORD_BYTES) if max_record_bytes is None \
        else int(max_record_bytes)
    total = _field(meta, "num_records", int, where)
    files = []
    counted = 0
    for shard in _field(meta, "shards", list, where):
        if not isinstance(shard, dict):
            raise ValueError(f"load_tfrecords: {where}: every shard must be an object")
        path = inside_root(folder, _field(shard, "file", str, where), f"load_tfrecords: {where}")
        if not os.path.isfile(path):
            raise ValueError(f"load_tfrecords: {path!r} (listed in {where}) does not exist")
        records = _field(shard, "records", int, where)
        _walk_records(path, records, limit)
        counted += records
        files.append(os.path.abspath(path))
    if not files or counted != total:
        raise ValueError(f"load_tfrecords: {where}: the shards hold {counted} records, "
                         f"num_records says {total}")
    return TFRecordSource(tuple(files), tuple(names), task, total, limit)


def parse_record(record, num_classes, task="multilabel"):
    """``(image bytes, labels)`` of one serialised record: float32 multi-hot ``[N]`` (-1 at
    ignored classes) or the int32 class id."""
    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "labels": tf.io.VarLenFeature(tf.int64),
            "ignored": tf.io.VarLenFeature(tf.int64)}
    ex = tf.io.parse_single_example(record, spec)
    pos = tf.sparse.to_dense(ex["labels"])
    if task == "singlelabel":
        tf.debugging.assert_equal(tf.size(pos), 1, "singlelabel record without one label")
        return ex["image"], tf.cast(pos[0], tf.int32)
    ign = tf.sparse.to_dense(ex["ignored"])
    for ids in (pos, ign):
        tf.debugging.assert_less(ids, tf.cast(num_classes, tf.int64), "class id out of range")
        tf.debugging.assert_non_negative(ids, "negative class id")
    multi = tf.zeros([num_classes], tf.float32)
    multi = tf.tensor_scatter_nd_update(multi, ign[:, None], -tf.ones_like(ign, tf.float32))
    multi = tf.tensor_scatter_nd_update(multi, pos[:, None], tf.ones_like(pos, tf.float32))
    return ex["image"], multi
