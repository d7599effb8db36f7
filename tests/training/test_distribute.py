"""tf.distribute training (issue 7): strategies, sharding, batch / lr arithmetic, and
replica runs equal to the single-device run (MirroredStrategy on 2 logical CPUs, and a
real 2-process MultiWorkerMirroredStrategy on localhost)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from keras_mld.training import distribute

pytestmark = pytest.mark.tf_only

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


# ---------------------------------------------------------------- pure functions
@pytest.mark.parametrize("rule,expected", [("none", 1e-4), ("linear", 4e-4), ("sqrt", 2e-4)])
def test_scale_learning_rate(rule, expected):
    assert distribute.scale_learning_rate(1e-4, 224, 56, rule) == pytest.approx(expected)
    assert distribute.scale_learning_rate("auto", 224, 56, rule) == "auto"


def test_scale_learning_rate_bad_args():
    with pytest.raises(ValueError, match="lr_scaling"):
        distribute.scale_learning_rate(1e-4, 8, 8, "cubic")
    with pytest.raises(ValueError, match="reference_batch_size"):
        distribute.scale_learning_rate(1e-4, 8, 0, "linear")


def test_reference_batch_size():
    assert distribute.reference_batch_size({"data": {"batch_size": 56}}) == 56
    assert distribute.reference_batch_size(
        {"data": {"batch_size": 8, "reference_batch_size": 56}}) == 56
    assert distribute.reference_batch_size({"data": {}}) is None


def test_per_replica_batch_size_default_strategy():
    assert distribute.per_replica_batch_size(7) == 7
    with pytest.raises(ValueError, match="global_batch_size"):
        distribute.per_replica_batch_size(0)


def test_make_strategy_names(monkeypatch):
    assert distribute.make_strategy("default") is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match="default.*mirrored.*multiworker.*tpu"):
        distribute.make_strategy("horovod")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {}}))
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("multiworker")


def test_make_strategy_tpu_clear_error():
    with pytest.raises(ValueError, match="no TPU found"):
        distribute.make_strategy("tpu")


def test_shard_policy_file_vs_data(tmp_path):
    path = str(tmp_path / "x.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        w.write(b"a")
    files = tf.data.Dataset.from_tensor_slices([path]).interleave(tf.data.TFRecordDataset)
    tensors = tf.data.Dataset.from_tensor_slices(np.arange(8)).map(lambda x: x * 2).batch(2)
    assert distribute.reads_files(files.batch(1))
    assert not distribute.reads_files(tensors)
    policy = lambda ds: ds.options().experimental_distribute.auto_shard_policy  # noqa: E731
    AutoShard = tf.data.experimental.AutoShardPolicy
    assert policy(distribute.with_shard_policy(files)) == AutoShard.FILE
    assert policy(distribute.with_shard_policy(tensors)) == AutoShard.DATA
    assert policy(distribute.with_shard_policy(tensors, "off")) == AutoShard.OFF
    assert distribute.with_shard_policy(tensors).cardinality() == 4
    with pytest.raises(ValueError, match="policy"):
        distribute.with_shard_policy(tensors, "rows")


class _Resolver:
    def __init__(self, task_type, task_id, cluster):
        self.task_type, self.task_id = task_type, task_id
        self._spec = tf.train.ClusterSpec(cluster)

    def cluster_spec(self):
        return self._spec


class _Strategy:
    def __init__(self, *args):
        self.cluster_resolver = _Resolver(*args)


def test_chief_and_worker_dirs(tmp_path):
    two = {"worker": ["h:1", "h:2"]}
    assert distribute.is_chief(_Strategy("worker", 0, two))
    assert not distribute.is_chief(_Strategy("worker", 1, two))
    assert distribute.is_chief(_Strategy("chief", 0, {"chief": ["h:0"], **two}))
    assert not distribute.is_chief(_Strategy("worker", 0, {"chief": ["h:0"], **two}))
    assert distribute.is_chief()  # no cluster
    run = tmp_path / "run"
    (run / "backup").mkdir(parents=True)
    (run / "backup" / "latest.weights.h5").write_bytes(b"w")
    with distribute.worker_run_dir(str(run), _Strategy("worker", 0, two)) as d:
        assert d == str(run)
    with distribute.worker_run_dir(str(run), _Strategy("worker", 1, two)) as d:
        assert d != str(run) and not d.startswith(str(run))
        assert open(os.path.join(d, "backup", "latest.weights.h5"), "rb").read() == b"w"
        open(os.path.join(d, "final.keras"), "w").close()
    assert not os.path.exists(d)
    assert sorted(os.listdir(run)) == ["backup"]


# ---------------------------------------------------------------- MirroredStrategy
_MIRRORED = textwrap.dedent("""
    import json, sys, tempfile
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, keras_mld
    from keras_mld.training import distribute, ema_variables
    from tests.support.tiny import tiny_backbone

    rs = np.random.RandomState(0)
    x = rs.uniform(0, 255, (32, 16, 16, 3)).astype("float32")
    y = (rs.rand(32, 6) < 0.3).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)   # global batch 8, 4 steps

    def model_fn():
        keras.utils.set_random_seed(0)
        return keras_mld.build(tiny_backbone(), head="mldecoder", num_classes=6,
                               input_shape=(16, 16, 3), num_groups=3, embed_dim=16,
                               num_heads=2, ff_dim=32, dropout=0.0)

    class Losses(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.losses = []
        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))

    out = {}
    for sam in [json.loads(sys.argv[1])]:  # one pair per process (see the test)
        recipe = {"epochs": 1, "lr": 1e-2, "schedule": "constant", "sam_rho": sam,
                  "ema_momentum": 0.5, "weight_decay": 1e-2, "optimizer": "adamw",
                  "loss": {"name": "asl", "gamma_neg": 4.0, "gamma_pos": 0.0, "clip": 0.05},
                  "metrics": ["mAP"], "map_capacity": 32,
                  "monitor": "loss",
                  "early_stopping": None,
                  "jit_compile": False, "tensorboard": False}
        res = {}
        for name, strategy in (("single", tf.distribute.OneDeviceStrategy("/cpu:0")),
                               ("mirrored", distribute.make_strategy(
                                   "mirrored", devices=["/cpu:0", "/cpu:1"]))):
            cb = Losses()
            model, hist = distribute.distributed_fit(model_fn, ds, None, recipe,
                                                  tempfile.mkdtemp(), strategy=strategy,
                                                  callbacks=[cb], verbose=0)
            res[name] = {"replicas": strategy.num_replicas_in_sync, "losses": cb.losses,
                         "mAP": hist.history["mAP"],
                         "weights": [v.numpy().tolist() for v in model.trainable_variables]}
            res[name]["iterations"] = int(cb.model.optimizer.iterations.numpy())
            res[name]["ema"] = [np.asarray(v.numpy()).tolist()
                                for v in ema_variables(model, cb.model.optimizer)]
        out[str(sam)] = res
    json.dump(out, sys.stdout)
""")


@pytest.mark.slow  # a fresh TensorFlow process, 4 short trainings (~20-40 s)
def test_mirrored_two_replicas_equals_single_device():
    # one process per SAM setting: a MirroredStrategy created after another one in the
    # same process can reuse its collective instance keys (TensorFlow), which breaks as
    # soon as the first one ran a gather (the exact mAP's) where the next runs a reduce
    out = {}
    for sam in ("null", "0.05"):
        proc = subprocess.run([sys.executable, "-c", _MIRRORED, sam], capture_output=True,
                              text=True, env=_env(), cwd=ROOT, timeout=240)
        assert proc.returncode == 0, proc.stderr[-4000:]
        out.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    for sam in ("None", "0.05"):
        single, mirrored = out[sam]["single"], out[sam]["mirrored"]
        assert single["replicas"] == 1 and mirrored["replicas"] == 2
        assert single["iterations"] == mirrored["iterations"] == 4
        # per-step logged losses (running mean of the global-batch loss) match
        np.testing.assert_allclose(mirrored["losses"], single["losses"], rtol=1e-5, atol=1e-6)
        # the exact mAP gathers the rows of both replicas (not a mean of per-replica mAPs)
        np.testing.assert_allclose(mirrored["mAP"], single["mAP"], atol=1e-6)
        # state tolerance: Adam moves each weight by ~lr = 1e-2 per step and amplifies float
        # summation-order noise where a gradient is ~0; allow 1 % of one step
        for key in ("weights", "ema"):
            for a, b in zip(single[key], mirrored[key]):
                np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-4)
        assert len(single["weights"]) == len(mirrored["weights"]) > 0
    # SAM changes the trajectory (so the SAM comparison is not the plain one twice)
    a = np.concatenate([np.ravel(w) for w in out["None"]["single"]["weights"]])
    b = np.concatenate([np.ravel(w) for w in out["0.05"]["single"]["weights"]])
    assert np.abs(a - b).max() > 1e-6


# Two worker processes on loopback: tests/training/test_multiworker_cli.py (the CLI, as
# the README's "Two nodes by hand", against one process; kill and resume).
