"""``keras_mld.app.bench`` (benchmarks/heads.py): the tiny run writes a well-formed table, it runs on
JAX with TensorFlow blocked, FLOP counting, and every head trains under mixed_float16."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_mld
from keras_mld import zsl
from keras_mld.app import bench, bench_report
from tests.support.tiny import SMALL_HEAD_KWARGS, tiny_backbone

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RATIO_COLUMNS = ["head", "N", "jit", "infer ratio", "train ratio", "memory ratio", "FLOP bound",
                 "infer eff.", "train eff."]
ABS_COLUMNS = ["head", "N", "jit", "params (M)", "GFLOPs/img", "infer img/s", "train img/s",
               "train peak mem (MiB)", "note"]


def _tables(text):
    """Markdown tables -> (header, rows of cells); written here, independent of bench_report."""
    tables, rows = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            rows = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if rows is None:
            rows = []
            tables.append((cells, rows))
        elif not all(set(c) <= set("-:") for c in cells):
            rows.append(cells)
    return tables


def _check_tiny_report(text, heads=("gap", "mldecoder", "query2label"), classes=("10", "40")):
    assert "<!-- bench:" in text and "<!-- /bench:" in text
    assert "machine: CPU" in text and "backend" in text
    tables = _tables(text)
    assert [h for h, _ in tables] == [RATIO_COLUMNS, ABS_COLUMNS]
    for header, rows in tables:
        assert sorted((r[0], r[1]) for r in rows) == sorted((h, n) for h in heads for n in classes)
        assert all(len(r) == len(header) for r in rows)
    ratios = [dict(zip(RATIO_COLUMNS, r)) for r in tables[0][1]]
    for r in ratios:
        values = [float(r[c]) for c in RATIO_COLUMNS[3:]]  # all measured: no "-"
        assert all(np.isfinite(values)) and all(v > 0 for v in values)
        if r["head"] == "gap":
            assert values == [1.0] * len(values)
    absolute = [dict(zip(ABS_COLUMNS, r)) for r in tables[1][1]]
    for r in absolute:
        assert r["note"] == ""
        assert all(float(r[c]) > 0 for c in ABS_COLUMNS[3:8])
    targets = [line for line in text.splitlines() if line.startswith("- ") and "x GAP" in line]
    assert targets and all(line[2:].split(":")[0] in ("PASS", "MISS", "n/a") for line in targets)
    assert any("Query2Label collapses" in line for line in text.splitlines())


@pytest.mark.slow
def test_tiny_run_writes_a_well_formed_table(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\nkept text\n")
    policy = keras.mixed_precision.global_policy().name
    assert bench.main(["--tiny", "--output", str(out), "--json", str(tmp_path / "r.json")]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nkept text\n")
    _check_tiny_report(text)
    raw = json.loads((tmp_path / "r.json").read_text())
    assert len(raw["rows"]) == 6 and raw["info"]["backend"] == keras.backend.backend()
    assert keras.mixed_precision.global_policy().name == policy


@pytest.mark.slow
def test_runs_on_jax_without_tensorflow(tmp_path):
    pytest.importorskip("jax")
    out = tmp_path / "b.md"
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "from keras_mld.app.bench import main\n"
            f"rc = main(['--tiny', '--output', {str(out)!r}])\n"
            "loaded = [m for m, v in sys.modules.items() if m.startswith('tensorflow') and v]\n"
            "assert not loaded, loaded\n"
            "sys.exit(rc)\n")
    # XLA CPU's LLVM optimisation is most of the compile time of these tiny training steps
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_backend_optimization_level=0")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    _check_tiny_report(text)
    assert "backend jax" in text and "| gap | 10 | True |" in text


def test_import_without_tensorflow_on_jax():
    pytest.importorskip("jax")
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "import keras, keras_mld, keras_mld.app.bench, keras_mld.app.bench_report\n"
            "assert keras.backend.backend() == 'jax'\n"
            "print(sorted(keras_mld.list_models()['heads']))\n")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mldecoder" in proc.stdout


def test_presets_and_explicit_options():
    quick = bench.parse_args(["--quick"])
    assert (quick.backbone, quick.size, quick.classes, quick.batch) == ("small_convnet", 64,
                                                                      (100, 1000), 8)
    assert quick.head_kwargs["mldecoder"]["num_groups"] == 100
    mine = bench.parse_args(["--quick", "--classes", "7", "--heads", "mldecoder", "--size", "48"])
    assert (mine.classes, mine.heads, mine.size) == ((7,), ["gap", "mldecoder"], 48)
    default = bench.parse_args([])
    assert (default.backbone, default.size, default.classes) == ("efficientnetv2_s", 224,
                                                                (100, 1000, 5000, 9600))
    with pytest.raises(SystemExit):
        bench.parse_args(["--dtype-policy", "float64"])


def test_write_section_replaces_only_its_section(tmp_path):
    path = str(tmp_path / "B.md")
    bench_report.write_section(path, "a", "first\n")
    bench_report.write_section(path, "b", "other\n")
    bench_report.write_section(path, "a", "second\n")
    text = open(path).read()
    assert "first" not in text and text.count("second") == 1 and "other" in text
    assert text.index("second") < text.index("other")


def test_ratios_and_checks():
    rows = []
    for n, (g, d, q) in {100: (100.0, 99.0, 90.0), 5000: (100.0, 98.0, 10.0)}.items():
        rows += [dict(head="gap", N=n, jit=True, infer=g, train=g / 3, memory=100, gflops=4.0),
                 dict(head="mldecoder", N=n, jit=True, infer=d, train=d / 3, memory=110,
                      gflops=4.04),
                 dict(head="query2label", N=n, jit=True, infer=q, train=q / 3, memory=300,
                      gflops=4.0 + n / 100)]
    rows = bench.add_ratios(rows)
    dec = rows[1]
    assert dec["infer_ratio"] == pytest.approx(0.99) and dec["flop_bound"] == pytest.approx(4 / 4.04)
    assert dec["infer_eff"] == pytest.approx(0.99 * 4.04 / 4)
    assert dec["memory_ratio"] == pytest.approx(1.1)
    verdicts = [status for status, _ in bench_report.checks(rows)]
    assert verdicts == ["PASS"] * len(verdicts) and len(verdicts) == 8


def test_checks_leave_out_what_the_run_did_not_measure():
    def row(head, n, infer, gflops):
        return dict(head=head, N=n, jit=False, infer=infer, train=None, memory=None,
                    gflops=gflops)

    # --no-train, no Query2Label: only the three inference checks
    rows = bench.add_ratios([row("gap", 100, 10.0, 4.0), row("mldecoder", 100, 9.0, 4.4),
                             row("gap", 5000, 10.0, 4.0), row("mldecoder", 5000, 9.0, 4.4)])
    texts = [text for _, text in bench_report.checks(rows)]
    assert len(texts) == 3 and not any("training" in t or "Query2Label" in t for t in texts)
    # Query2Label alone: its collapse is judged without ML-Decoder
    rows = bench.add_ratios([row("gap", 100, 10.0, 4.0), row("query2label", 100, 9.0, 4.4),
                             row("gap", 1000, 10.0, 4.0), row("query2label", 1000, 2.0, 9.0)])
    assert bench_report.checks(rows) == [
        ("PASS", "[jit=False] Query2Label collapses with N (inference ratio at N=1000 <= 0.5 x "
                 "at N=100, and below ML-Decoder's where run): 0.900 -> 0.200 (ML-Decoder -)")]


def test_ratios_pair_the_repetitions():
    """Per-repetition ratios (timed seconds apart) are what the median is taken of, so a
    slowdown of the machine during one repetition does not move the ratio."""
    gap = dict(head="gap", N=10, jit=True, infer=60.0, infer_reps=[100.0, 50.0, 60.0],
               train=None, memory=None, gflops=1.0)
    dec = dict(head="mldecoder", N=10, jit=True, infer=45.0, infer_reps=[90.0, 45.0, 30.0],
               train=None, memory=None, gflops=1.0)
    rows = bench.add_ratios([gap, dec])
    assert rows[1]["infer_ratio"] == pytest.approx(0.9)  # ratio of medians would be 0.75
    assert rows[1]["train_ratio"] is None
    # no per-repetition data (or mismatched lengths): the ratio of the medians
    assert bench.paired_ratio(dict(infer=3.0), dict(infer=4.0), "infer") == pytest.approx(0.75)
    assert bench.paired_ratio(dict(infer=3.0, infer_reps=[3.0]),
                              dict(infer=4.0, infer_reps=[4.0, 4.0]), "infer") == pytest.approx(0.75)


def test_einsum_flops():
    assert bench._einsum_flops("bkd,kdg->bkg", [[2, 3, 4], [3, 4, 5]]) == 2 * 2 * 3 * 4 * 5
    assert bench._einsum_flops("bij->bji", [[2, 3, 4]]) == 0


@pytest.mark.tf_only
def test_tf_flops_counts_a_dense_layer():
    model = keras.Sequential([keras.Input((7,)), keras.layers.Dense(5)])
    assert bench.tf_flops(model, (7,)) == 2 * 7 * 5 + 5  # MatMul + BiasAdd


# --- every head trains under mixed_float16 --------------------------------------------------
N = 5
GRAPH_KWARGS = {
    "gat": {},
    "gat+mldecoder": dict(SMALL_HEAD_KWARGS["mldecoder"], gat_num_heads=2),
    "mlgcn": {"hidden_dim": 8},
}


@pytest.fixture
def mixed_float16():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize("head", keras_mld.list_models()["heads"])
def test_every_head_trains_under_mixed_float16(head, mixed_float16):
    rng = np.random.default_rng(0)
    y = (rng.uniform(size=(8, N)) < 0.4).astype("float32")
    y[:, 0] = 1.0
    kwargs = dict(SMALL_HEAD_KWARGS.get(head, {}))
    if head in GRAPH_KWARGS:
        kwargs.update(GRAPH_KWARGS[head],
                      label_vectors=rng.normal(size=(N, 7)).astype("float32"),
                      label_graph=zsl.conditional_probability(y))
    model = keras_mld.build(tiny_backbone(), head=head, num_classes=N, input_shape=(32, 32, 3),
                            **kwargs)
    assert model.head.layers[-1].compute_dtype == "float16"  # the head layer runs in float16
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras_mld.losses.AsymmetricLoss())
    x = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    losses = [model.train_on_batch(x, y, return_dict=True)["loss"] for _ in range(2)]
    assert np.all(np.isfinite(losses))
    logits = model(x, training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))


def _profile_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "profile_head", os.path.join(ROOT, "benchmarks", "profile_head.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.tf_only
def test_profile_head_stages_partition_the_head_and_the_table_is_well_formed():
    """benchmarks/profile_head.py: the ML-Decoder stages it times add up, in counted FLOPs, to
    the whole head (so "where the time goes" covers the whole head), the backbone part is the
    backbone, and the report is one row per part and jit mode."""
    profile = _profile_module()
    args = profile.parse_args(["--backbone", "small_convnet", "--size", "32", "--classes", "30",
                               "--num-groups", "6", "--batch", "2", "--reps", "1", "--iters", "1"])
    parts = profile.parts(args)
    flops = {name: bench.tf_flops(model, shape) for name, (model, shape) in parts.items()}
    stages = sum(f for name, f in flops.items() if name.startswith("  "))
    assert stages == pytest.approx(flops["ML-Decoder head"], rel=1e-6)
    full = keras_mld.build("small_convnet", head="mldecoder", num_classes=30, num_groups=6,
                           input_shape=(32, 32, 3))
    # the whole model also normalises its input (a few FLOPs per pixel): within 0.5 %
    assert flops["backbone"] + flops["ML-Decoder head"] == pytest.approx(
        bench.tf_flops(full, (32, 32, 3)), rel=5e-3)
    rows = [dict(part=name, jit=jit, gflops=f / 1e9, seconds=1e-3 * (i + 1))
            for i, (name, f) in enumerate(flops.items()) for jit in (False, True)]
    text = profile.render(args, rows)
    header, body = _tables(text)[0]
    assert header[:2] == ["part", "jit"] and len(body) == 2 * len(parts)
    assert body[0][0] == "backbone" and body[0][-1] == "1.00"
    # measure() times every part in both jit modes
    measured = profile.measure(args)
    assert {(r["part"], r["jit"]) for r in measured} == {(p, j) for p in parts for j in (False, True)}
    assert all(r["seconds"] > 0 for r in measured)
