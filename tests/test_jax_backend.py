"""The layer, loss and metric tests also pass on the JAX backend (no TensorFlow in the layers).

Runs those test directories again in a subprocess with ``KERAS_BACKEND=jax`` (a
backend is fixed per process), and checks that the layers/losses packages never
import TensorFlow.
"""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_layers_losses_metrics_pass_on_jax():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
           "tests/layers", "tests/losses", "tests/metrics"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail


def test_layers_and_losses_do_not_import_tensorflow():
    pytest.importorskip("jax")
    code = ("import sys, keras_mld.layers, keras_mld.losses, keras_mld.metrics; "
            "bad = [m for m in sys.modules if m == 'tensorflow' or m.startswith('tensorflow.')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
