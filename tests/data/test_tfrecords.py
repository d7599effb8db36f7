"""TFRecord shards (issue 22): pack -> read gives the CSV's images and labels, FILE sharding
over two workers reads every record once per epoch, the folder is untrusted input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_mld.data import LabelledImages, load_tfrecords, make_dataset, pack_tfrecords

pytestmark = pytest.mark.tf_only

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from keras_mld.data import make_digits_dataset
    from keras_mld.data.coco import load_coco

    root = tmp_path_factory.mktemp("digits")
    digits = make_digits_dataset(str(root), num_train=24, num_val=8, image_size=64, seed=0)
    src = load_coco(digits.train_annotations)
    labels = np.array(src.labels)  # dense (the loader keeps rows of class indices)
    labels[3, 2] = -1  # an ignored (partial) label survives the round trip
    return LabelledImages(src.paths, labels, src.class_names, src.task)


def _batches(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_pack_then_read_equals_the_file_list(source, tmp_path):
    packed = pack_tfrecords(source, tmp_path / "shards", num_shards=4)
    assert len(packed) == len(source) and packed.class_names == source.class_names
    meta = json.load(open(tmp_path / "shards" / "dataset.json"))
    assert [s["records"] for s in meta["shards"]] == [6, 6, 6, 6]
    assert sorted(os.listdir(tmp_path)) == ["shards"]  # no temporary left beside it
    # unshuffled, the round-robin shards read round-robin give back the source order
    x_rec, y_rec = _batches(make_dataset(load_tfrecords(tmp_path / "shards"), 32, 5,
                                         num_parallel_calls=1))
    x_csv, y_csv = _batches(make_dataset(source, 32, 5, check_cache=False))
    np.testing.assert_array_equal(y_rec, y_csv)
    np.testing.assert_array_equal(x_rec, x_csv)
    assert (y_rec == -1).sum() == 1
    raw = next(iter(tf.data.TFRecordDataset(packed.files[0])))
    ex = tf.train.Example.FromString(raw.numpy())
    assert ex.features.feature["image"].bytes_list.value[0] == open(source.paths[0], "rb").read()
    with pytest.raises(ValueError, match="exists"):
        pack_tfrecords(source, tmp_path / "shards", num_shards=4)


def test_two_workers_read_every_record_once_per_epoch(source, tmp_path):
    """The auto-shard rewrite tf.distribute applies on each of two workers (FILE policy,
    chosen by with_shard_policy since the pipeline reads TFRecord files)."""
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

    from keras_mld.training.distribute import reads_files, with_shard_policy

    packed = pack_tfrecords(source, tmp_path / "shards", num_shards=4)
    ds = make_dataset(packed, 16, 2, training=True, seed=0)
    assert reads_files(ds)
    ds = with_shard_policy(ds)
    assert ds.options().experimental_distribute.auto_shard_policy == \
        tf.data.experimental.AutoShardPolicy.FILE
    # an image is identified by its label row and pixel sum
    key = lambda x, y: [(tuple(r), round(float(s), 1))  # noqa: E731
                        for r, s in zip(y, x.reshape(len(x), -1).sum(1))]
    x_all, y_all = _batches(make_dataset(packed, 16, 24))
    everything = sorted(key(x_all, y_all))
    for _ in range(2):  # two epochs: reshuffled, still each record once
        seen = []
        for worker in range(2):
            x, y = _batches(_AutoShardDataset(ds, 2, worker, 2))
            seen += key(x, y)
        assert sorted(seen) == everything


def test_untrusted_folders(source, tmp_path):
    packed = pack_tfrecords(source, tmp_path / "s", num_shards=2)
    meta_path = tmp_path / "s" / "dataset.json"
    meta = json.load(open(meta_path))
    with pytest.raises(ValueError, match="max_record_bytes"):
        load_tfrecords(tmp_path / "s", max_record_bytes=100)
    bad = dict(meta, shards=[dict(meta["shards"][0], file="../../etc/passwd")])
    meta_path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="outside"):
        load_tfrecords(tmp_path / "s")
    meta_path.write_text(json.dumps(dict(meta, num_records=5)))
    with pytest.raises(ValueError, match="num_records"):
        load_tfrecords(tmp_path / "s")
    meta_path.write_text(json.dumps(meta))
    data = open(packed.files[1], "rb").read()
    open(packed.files[1], "wb").write(data[: len(data) // 2])  # truncated shard
    with pytest.raises(ValueError, match="shard-00001.*past the end"):
        load_tfrecords(tmp_path / "s")
    open(packed.files[1], "wb").write(b"\xff" * 8 + data[8:])  # a huge declared length
    with pytest.raises(ValueError, match="shard-00001.*max_record_bytes"):
        load_tfrecords(tmp_path / "s")
    with pytest.raises(ValueError, match="dataset.json"):
        load_tfrecords(tmp_path)


def test_cli_data_pack(source, tmp_path):
    import csv

    root = os.path.dirname(os.path.dirname(source.paths[0]))
    rows = [(os.path.relpath(p, root), "|".join(n for n, v in zip(source.class_names, l) if v == 1))
            for p, l in zip(source.paths[:6], source.labels[:6])]
    csv_path = os.path.join(root, "list.csv")
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([("path", "labels")] + rows)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "keras_mld", "data", "pack", "--data",
                           csv_path, "--out", str(tmp_path / "packed"), "--num-shards", "2"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    packed = load_tfrecords(tmp_path / "packed")
    assert len(packed) == 6 and len(packed.files) == 2
