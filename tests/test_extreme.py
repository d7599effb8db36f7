"""Extreme classification (issue 7): ML-Decoder with N = 20,000 classes and K = 100 groups
trains a step and exports a TF Serving SavedModel within this machine's memory; the peak
RSS of that run is printed (``-s``) and bounded."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.tf_only

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, K = 20_000, 100

_SCRIPT = textwrap.dedent(f"""
    import json, sys, tempfile

    def peak_rss_kib():
        # this process's own peak (VmHWM); ru_maxrss starts at the (big) pytest parent's peak
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    import numpy as np, keras, tensorflow as tf
    import keras_mld
    from keras_mld.export import export_saved_model
    from keras_mld.training import SAMModel
    from tests.support.tiny import tiny_backbone

    keras.utils.set_random_seed(0)
    model = keras_mld.build(tiny_backbone(), head="mldecoder", num_classes={N},
                            input_shape=(32, 32, 3), num_groups={K}, dropout=0.0)  # paper dims D=768
    rs = np.random.RandomState(0)
    x = rs.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = np.zeros((8, {N}), "float32")
    y[np.arange(8)[:, None], rs.randint(0, {N}, (8, 3))] = 1.0
    train = SAMModel(model, rho=0.05)
    train.compile(keras.optimizers.Adam(1e-3), loss=keras_mld.losses.AsymmetricLoss(),
                  jit_compile=False)
    before = model.trainable_variables[-1].numpy().copy()
    hist = train.fit(x, y, batch_size=8, epochs=1, verbose=0)
    changed = float(np.abs(model.trainable_variables[-1].numpy() - before).max())
    out = tempfile.mkdtemp()
    path = export_saved_model(model, out, [f"c{{i}}" for i in range({N})])
    loaded = tf.saved_model.load(path)
    scores = loaded.signatures["serving_default"](images=tf.constant(x[:2]))["scores"]
    ref = keras.ops.convert_to_numpy(keras.ops.sigmoid(model(x[:2], training=False)))
    print(json.dumps({{
        "params": int(model.count_params()),
        "loss": float(hist.history["loss"][0]), "changed": changed,
        "scores_shape": list(scores.shape),
        "max_diff": float(np.abs(scores.numpy() - ref).max()),
        "peak_rss_mib": peak_rss_kib() / 1024}}))
""")


@pytest.mark.slow  # a fresh TensorFlow process and a SavedModel export (~30-60 s)
def test_mldecoder_20000_classes_trains_and_exports():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print("extreme N=20000 K=100:", res)
    assert np.isfinite(res["loss"]) and res["changed"] > 0  # one SAM step moved the head
    assert res["scores_shape"] == [2, N]
    assert res["max_diff"] < 1e-5  # the exported graph serves the trained model
    assert res["peak_rss_mib"] < 4096  # fits comfortably on a small CPU machine

