"""Every official-parity test again on the JAX backend, in one subprocess: the converted
Query2Label, C-Tran, TResNet and ML-Decoder models give the official PyTorch logits there too
(the fixtures and tolerances of the files it runs)."""
import os
import subprocess
import sys

import pytest

from tests.support.official import ROOT

PARITY_FILES = ["tests/models/query2label/test_convert.py", "tests/models/ctran/test_convert.py",
                "tests/models/tresnet/test_convert.py", "tests/models/ml_decoder/test_convert.py",
                "tests/models/tresnet/test_tresnet.py"]


@pytest.mark.slow
@pytest.mark.tf_only  # it starts the JAX run itself; the JAX suite skips it
def test_parity_on_jax():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # the big-model size and registry checks of test_tresnet.py stay on TensorFlow
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-o",
           "addopts=", "-k", "not sizes and not registered and not cli", *PARITY_FILES]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    tail = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail
    assert "skipped" not in proc.stdout, tail
    assert "[jax]" in proc.stdout, tail
    print("\n".join(line for line in proc.stdout.splitlines() if "[jax]" in line))
