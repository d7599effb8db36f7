"""A killed training run resumes from the BackupAndRestore checkpoint."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.tf_only

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "support", "resume_script.py")


def _start(run_dir, **env):
    full = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", **env)
    # the repository first on the path: works from a checkout that is not pip-installed
    full["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, SCRIPT, str(run_dir)], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _epochs(run_dir):
    with open(os.path.join(run_dir, "epochs.txt")) as f:
        return [int(line) for line in f if line.strip()]


@pytest.mark.slow  # two fresh TensorFlow processes: ~25 s on an idle 2-core machine
def test_sigkill_after_first_epoch_then_resume(tmp_path):
    run_dir = tmp_path / "run"
    # run 1: killed with SIGKILL once epoch index 0 has finished (backup written)
    proc = _start(run_dir, HANG_AFTER_EPOCH="0")
    deadline = time.time() + 240
    while not (run_dir / "hanging").exists():
        if proc.poll() is not None:
            pytest.fail("run 1 ended early:\n" + proc.stderr.read()[-3000:])
        if time.time() > deadline:
            proc.kill()
            pytest.fail("run 1 did not finish its first epoch in time")
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert _epochs(run_dir) == [0]
    assert (run_dir / "backup").is_dir() and (run_dir / "best.keras").exists()
    assert not [p for p in os.listdir(run_dir) if p.startswith(".tmp-")]

    # run 2: same command, resumes at epoch index 1 and runs 1 and 2 only
    proc = _start(run_dir)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])
    assert result["epochs"] == [1, 2]
    assert _epochs(run_dir) == [0, 1, 2]  # 3 epochs in total
    # optimizer state came back with the backup: 3 epochs x 4 batches of updates
    assert result["iterations"] == 12
    assert {"val_mAP", "val_ema_mAP", "val_ema_loss"} <= set(result["keys"])
    with open(run_dir / "log.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]
    assert not (run_dir / "backup").exists()  # removed once the run completed
    assert (run_dir / "final.keras").exists()
    assert not (run_dir / "callback_state" / "best.json").exists()
