"""The layer, loss and metric tests also pass on the JAX backend (no TensorFlow in the layers).

Runs those tests again in a subprocess with ``KERAS_BACKEND=jax`` (a backend is fixed per
process): the shared layers, each architecture's layers, the losses and the metrics; and
checks that the layers, losses, metrics and models never import TensorFlow there.
"""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the layer tests of the architecture folders (tests/models/<arch>/test_<layer>.py)
ARCHITECTURE_LAYER_TESTS = [
    "tests/models/ml_decoder/test_ml_decoder.py", "tests/models/ml_decoder/test_zero_shot.py",
    "tests/models/ml_decoder/test_query_augmentation.py",
    "tests/models/query2label/test_query2label.py", "tests/models/ctran/test_ctran.py",
    "tests/models/graph/test_gcn.py", "tests/models/graph/test_graph_attention.py"]


@pytest.mark.slow
def test_layers_losses_metrics_pass_on_jax():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
           "tests/layers", "tests/losses", "tests/metrics", *ARCHITECTURE_LAYER_TESTS]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail


@pytest.mark.slow
def test_official_training_first_epoch_on_jax():
    """``mldecoder_coco``, ``mldecoder_nus_zsl``, ``query2label_coco``, ``ctran_coco`` = the
    official loops and ``aam_*`` = deep-object-reid's SAM step, first epoch, on JAX (the full
    comparisons run on TensorFlow: tests/training/test_official_training.py,
    test_official_aam_training.py, test_official_training_q2l_ctran.py)."""
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
           "tests/training/test_official_training.py",
           "tests/training/test_official_aam_training.py",
           "tests/training/test_official_training_q2l_ctran.py", "-k", "first_epoch"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0 and "5 passed" in proc.stdout, tail


def test_layers_and_losses_do_not_import_tensorflow():
    pytest.importorskip("jax")
    code = ("import sys, keras_mld.layers, keras_mld.losses, keras_mld.metrics, keras_mld.models; "
            "from keras_mld.layers import MLDecoder, Query2LabelHead, CTranHead, MLGCNHead; "
            "bad = [m for m in sys.modules if m == 'tensorflow' or m.startswith('tensorflow.')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
