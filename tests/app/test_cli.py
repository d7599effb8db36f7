"""The ``keras-mld`` command line: --version, --help without TensorFlow, bench's own options,
TensorFlow's C++ start-up lines silenced by default (a user's TF_CPP_MIN_LOG_LEVEL wins)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from keras_mld import __version__
from keras_mld.app import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _python(code, tmp_path, **env):
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(**env),
                          capture_output=True, text=True, timeout=300)


def test_version_is_the_package_version(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "keras_mld", "--version"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"keras-mld {__version__}"
    assert proc.stderr == ""


def test_help_of_every_command_imports_no_tensorflow(tmp_path):
    names = sorted(cli.build_parser()._subparsers._group_actions[0].choices)
    assert {"demo", "train", "evaluate", "predict", "export", "bench"} <= set(names)
    code = (
        "import json, sys\n"
        "from keras_mld.app.cli import main\n"
        "codes = {}\n"
        f"for argv in [['--help']] + [[n, '--help'] for n in {names!r}]:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        codes[' '.join(argv)] = e.code\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules]\n"
        "print(json.dumps({'codes': codes, 'heavy': heavy}))\n")
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert len(result["codes"]) == len(names) + 1
    assert set(result["codes"].values()) == {0}
    assert "--quick" in proc.stdout and "--tiny" in proc.stdout  # bench's own help


def test_bench_takes_its_own_options_first_and_others_reject_unknown_ones():
    args = cli.parse_args(["bench", "--quick", "--output", "-"])
    assert args.command == "bench" and args.extra_args == ["--quick", "--output", "-"]
    from keras_mld.app import bench

    parsed = bench.parse_args(args.extra_args)
    assert parsed.quick and parsed.backbone == bench.QUICK["backbone"]
    with pytest.raises(SystemExit) as err:
        cli.parse_args(["demo", "--quick"])
    assert err.value.code == 2


@pytest.mark.parametrize("line, level, dropped", [
    ("I0000 00:00:1796017375.083880    7325 port.cc:153] oneDNN custom operations", 2, True),
    ("W0000 00:00:1796017375.083880    7325 x.cc:1] a warning", 2, True),
    ("E0000 00:00:1796017375.083880    7325 x.cc:1] an error", 2, False),
    ("2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] x", 2, True),
    ("2025-09-17 14:44:05.157831: E external/cuda_fft.cc:467] Unable to register", 2, False),
    ("WARNING: All log messages before absl::InitializeLog() is called are written", 2, True),
    ("WARNING: All log messages before absl::InitializeLog() is called are written", 1, False),
    ("I0000 00:00:1796017375.083880    7325 port.cc:153] info", 1, True),
    ("Traceback (most recent call last):", 3, False),
    ("E0000 00:00:1796022651.702862   30893 cuda_platform.cc:52] failed call to cuInit: "
     "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)", 2, True),
    ("E0000 00:00:1796022651.702862   30893 cuda_platform.cc:52] failed call to cuInit: x",
     1, False),
])
def test_log_filter_drops_only_lines_below_the_level(line, level, dropped):
    assert cli._below_level(line, level) is dropped


def _start_up_lines(stderr):
    return [line for line in stderr.splitlines() if cli._below_level(line, 2)]


def test_tensorflow_start_up_lines_are_silenced_unless_the_user_asks(tmp_path):
    quiet_code = ("import os, sys\nfrom keras_mld.app.cli import import_tensorflow_quietly\n"
                  "import_tensorflow_quietly()\n"
                  "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], 'tensorflow' in sys.modules)\n")
    quiet = _python(quiet_code, tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.split() == ["2", "True"]  # the default level, TensorFlow imported
    assert _start_up_lines(quiet.stderr) == []
    loud = _python(quiet_code, tmp_path, TF_CPP_MIN_LOG_LEVEL="0")
    assert loud.returncode == 0, loud.stderr
    assert loud.stdout.split() == ["0", "True"]  # the user's value wins: nothing is captured


def test_import_is_light_and_first_use_registers_everything(tmp_path):
    code = ("import sys, keras_mld\n"
            "light = 'keras' not in sys.modules and 'tensorflow' not in sys.modules\n"
            "keras_mld.build  # first use\n"
            "import keras\n"
            "objs = keras.saving.get_custom_objects()\n"
            "names = ['keras_mld>MLDecoder', 'keras_mld>AsymmetricLoss', 'keras_mld>AAMLoss',\n"
            "         'keras_mld>GraphAttentionReweight', 'keras_mld>OneCycle']\n"
            "print(light, [n for n in names if n not in objs])\n")
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[-2] == "True []"
