"""Head benchmarks (``keras-mld bench`` / ``benchmarks/heads.py``): throughput, memory and
counted FLOPs of GAP, ML-Decoder and Query2Label on one backbone, as ratios to GAP.

Runs on the TensorFlow and on the JAX backend. No TensorFlow import at module level (nor
``keras_mld.data`` / ``training`` / ``export``): on ``KERAS_BACKEND=jax`` it runs where
TensorFlow is not installed. What is measured, and how:

* inference / training images/s: every configuration (head x N x jit) is built in the same
  process; timings are taken round-robin over the configurations, ``--reps`` times, each a
  run of ``--iters`` steps after warm-up; the table shows the median.
  TF: ``model.predict_on_batch`` / ``model.train_on_batch`` after
  ``model.compile(jit_compile=...)``. JAX: a ``jax.jit`` stateless forward pass and a
  ``jax.jit`` stateless training step (``stateless_call`` + ``jax.value_and_grad`` +
  ``Adam.stateless_apply``, buffers donated); JAX is always jitted.
  Training: random images, random multi-hot labels, ``AsymmetricLoss``, Adam.
* GFLOPs / image: counted for the inference forward pass at batch 1. JAX: XLA
  ``cost_analysis()["flops"]`` of the forward pass compiled for the CPU at batch 1 (a GPU
  executable counts its cuDNN convolutions as 0 FLOPs). TF: the graph of
  ``tf.function(model).get_concrete_function`` through
  ``tensorflow.python.profiler.model_analyzer`` (float_operation), plus ``Einsum``
  ops, which the profiler does not count, counted here as 2 x product of all index sizes.
* peak training memory at the fixed training batch. JAX: XLA's memory analysis of the
  compiled training step (arguments + outputs + temporaries - aliased). TF on GPU:
  ``tf.config.experimental.get_memory_info`` peak after ``reset_memory_stats`` around one
  step. TF on CPU: increase of the process peak RSS (VmHWM, reset through
  ``/proc/self/clear_refs``) over one step.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

from keras_mld.app.bench_report import add_ratios, paired_ratio  # noqa: F401 (paired_ratio re-exported)
from keras_mld.untrusted import parse_json

DEFAULT_CLASSES = (100, 1000, 5000, 9600)
DEFAULT_HEADS = ("gap", "mldecoder", "query2label")
QUICK = dict(backbone="small_convnet", size=64, classes=(100, 1000), batch=8, train_batch=8,
             reps=3, iters=2, warmup=1, jit="off")
QUICK_HEAD_KWARGS = {  # narrower heads than the defaults: a CPU smoke run in < 2 minutes
    "mldecoder": {"embed_dim": 256, "ff_dim": 512},
    "query2label": {"hidden_dim": 128, "num_heads": 8, "ff_dim": 256},
}
# Query2Label as the ML-Decoder paper times it: its "transformer-decoder" baseline
# (keras_mld.models.query2label.TRANSFORMER_DECODER_BASELINE, quadratic in N). The official
# Query2Label default removes the decoder self-attention (linear in N); pass
# --head-kwargs '{"query2label": {"keep_first_self_attn_dec": false, ...}}' to time that one.
Q2L_BENCH_WIDTH = {"hidden_dim": 256, "num_heads": 8, "ff_dim": 1024}  # full runs
TINY = dict(backbone="small_convnet", size=32, classes=(10, 40), batch=4, train_batch=4,
            reps=2, iters=1, warmup=1, jit="off")
TINY_HEAD_KWARGS = {
    "mldecoder": {"num_groups": 4, "embed_dim": 32, "num_heads": 2, "ff_dim": 64},
    "query2label": {"hidden_dim": 32, "num_heads": 2, "ff_dim": 64, "num_encoder_layers": 0,
                    "num_decoder_layers": 1},
}


def _transformer_decoder_baseline():
    from keras_mld.models.query2label.head import TRANSFORMER_DECODER_BASELINE

    return TRANSFORMER_DECODER_BASELINE


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="benchmarks/heads.py", description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="efficientnetv2_s")
    p.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    p.add_argument("--heads", default=",".join(DEFAULT_HEADS),
                   help="comma-separated heads; gap is always included (the reference)")
    p.add_argument("--classes", default=",".join(map(str, DEFAULT_CLASSES)),
                   help="comma-separated numbers of classes N (default 100,1000,5000,9600)")
    p.add_argument("--num-groups", type=int, default=100, help="ML-Decoder K (default 100)")
    p.add_argument("--head-kwargs", default="{}",
                   help='JSON {"head": {kwargs}} passed to keras_mld.build, e.g. '
                        '\'{"query2label": {"hidden_dim": 512}}\'')
    p.add_argument("--batch", type=int, default=64, help="inference batch (default 64)")
    p.add_argument("--train-batch", type=int, default=32, help="training batch (default 32)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions (median; default 5)")
    p.add_argument("--iters", type=int, default=10, help="steps per repetition (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per config (default 2)")
    p.add_argument("--jit", choices=("both", "on", "off"), default="both",
                   help="TF: with and/or without jit_compile (JAX: always jitted)")
    p.add_argument("--dtype-policy", default=None,
                   choices=("float32", "mixed_float16", "mixed_bfloat16"))
    p.add_argument("--no-train", action="store_true", help="skip training timings and memory")
    p.add_argument("--output", default=None,
                   help="markdown file (default BENCHMARKS.md in the current directory); "
                        "'-' = stdout only")
    p.add_argument("--section", default=None,
                   help="section name in --output, replaced if present (default from the setup)")
    p.add_argument("--json", default=None, help="also write the raw results as JSON here")
    p.add_argument("--quick", action="store_true",
                   help="small_convnet 64 px, N in (100, 1000), batch 8, 3 reps, narrower heads, TF "
                        "without jit (< 2 min on 2 CPUs)")
    p.add_argument("--tiny", action="store_true",
                   help="even smaller (32 px, N in (10, 40), small heads): the test suite's run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.argv = list(argv or [])
    preset = TINY if args.tiny else QUICK if args.quick else None
    if preset:
        for key, value in preset.items():
            if getattr(args, key) == p.get_default(key):
                setattr(args, key, value)
    args.classes = tuple(int(n) for n in str(args.classes).strip("()").split(",") if n.strip())
    args.heads = ["gap"] + [h for h in args.heads.split(",") if h and h != "gap"]
    kwargs = parse_json(args.head_kwargs, "bench: --head-kwargs")
    if args.tiny or args.quick:
        kwargs = {**(TINY_HEAD_KWARGS if args.tiny else QUICK_HEAD_KWARGS), **kwargs}
    kwargs.setdefault("mldecoder", {}).setdefault("num_groups", args.num_groups)
    q2l = kwargs.setdefault("query2label", dict(Q2L_BENCH_WIDTH))
    for key, value in _transformer_decoder_baseline().items():
        q2l.setdefault(key, value)
    args.head_kwargs = kwargs
    if any(n < 1 for n in args.classes) or not args.classes:
        p.error(f"--classes: positive integers expected, got {args.classes}")
    return args


# --------------------------------------------------------------------------- machine
def machine_info():
    import keras

    backend = keras.backend.backend()
    info = {"backend": backend, "keras": keras.__version__, "python": platform.python_version(),
            "cpu": _cpu_model(), "cpus": os.cpu_count(), "accelerator": "none (CPU)"}
    if backend == "jax":
        import jax
        import jaxlib

        info["jax"] = f"{jax.__version__} (jaxlib {jaxlib.__version__})"
        dev = jax.devices()[0]
        if dev.platform != "cpu":
            info["accelerator"] = f"{dev.device_kind} x{len(jax.devices())}"
    elif backend == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
            info["accelerator"] = f"{name} x{len(gpus)}"
    info["dtype_policy"] = keras.mixed_precision.global_policy().name
    return info


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def on_accelerator(info):
    return not info["accelerator"].startswith("none")


# --------------------------------------------------------------------------- build
def _build(args, head, n):
    import keras
    from keras_mld.models.builder import build

    keras.utils.set_random_seed(args.seed)
    return build(args.backbone, head=head, num_classes=n, input_shape=(args.size, args.size, 3),
                 **args.head_kwargs.get(head, {}))


def _data(args, n, batch, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (batch, args.size, args.size, 3)).astype("float32")
    y = (rng.uniform(size=(batch, n)) < min(0.5, 3.0 / n)).astype("float32")
    y[:, 0] = 1.0
    return x, y


class Config:
    """One (head, N, jit) model with ``infer()`` / ``train()`` steps that block until done."""

    def __init__(self, args, head, n, jit, info):
        self.head, self.n, self.jit = head, n, jit
        self.times = {"infer": [], "train": []}
        self.error = None
        t0 = time.perf_counter()
        self.model = _build(args, head, n)
        self.phases = {"model": time.perf_counter() - t0}  # seconds per build phase (log)
        self.params = int(self.model.count_params())
        self.x, _ = _data(args, n, args.batch, args.seed)
        self.xt, self.yt = _data(args, n, args.train_batch, args.seed + 1)
        self.batch, self.train_batch = args.batch, args.train_batch
        self.gflops = self.memory = None
        self.info = info
        self.train_enabled = not args.no_train


class JaxConfig(Config):
    def prepare(self):
        import jax
        import keras
        from keras_mld.losses import AsymmetricLoss

        model = self.model
        self.tv = [v.value for v in model.trainable_variables]
        self.ntv = [v.value for v in model.non_trainable_variables]

        def forward(tv, ntv, x):
            return model.stateless_call(tv, ntv, x, training=False)[0]

        # one compilation each (the AOT-compiled executables are the ones timed)
        t0 = time.perf_counter()
        self._infer = jax.jit(forward).lower(self.tv, self.ntv, self.x).compile()
        self.phases["forward"] = time.perf_counter() - t0
        # FLOPs from a CPU compilation at batch 1: on a GPU, XLA turns convolutions into
        # cuDNN custom calls that its cost analysis counts as 0 FLOPs
        cpu = jax.devices("cpu")[0]
        on_cpu = jax.device_put((self.tv, self.ntv, self.x[:1]), cpu)
        t0 = time.perf_counter()
        cost = jax.jit(forward).lower(*on_cpu).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        self.gflops = float(cost["flops"]) / 1e9
        self.phases["flops"] = time.perf_counter() - t0
        if not self.train_enabled:
            return
        optimizer = keras.optimizers.Adam(1e-4)
        optimizer.build(model.trainable_variables)
        self.ov = [v.value for v in optimizer.variables]
        loss_fn = AsymmetricLoss()

        def loss_and_state(tv, ntv, x, y):
            logits, ntv = model.stateless_call(tv, ntv, x, training=True)
            return loss_fn(y, logits), ntv

        grad_fn = jax.value_and_grad(loss_and_state, has_aux=True)

        def step(tv, ntv, ov, x, y):
            (loss, ntv), grads = grad_fn(tv, ntv, x, y)
            tv, ov = optimizer.stateless_apply(ov, grads, tv)
            return loss, tv, ntv, ov

        t0 = time.perf_counter()
        self._train = jax.jit(step, donate_argnums=(0, 1, 2)).lower(
            self.tv, self.ntv, self.ov, self.xt, self.yt).compile()
        self.phases["train"] = time.perf_counter() - t0
        mem = self._train.memory_analysis()
        if mem is not None:
            self.memory = (mem.argument_size_in_bytes + mem.output_size_in_bytes
                           + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
        self.xt, self.yt = jax.device_put(self.xt), jax.device_put(self.yt)
        self.x = jax.device_put(self.x)

    def infer(self):
        self._infer(self.tv, self.ntv, self.x).block_until_ready()

    def train(self):
        loss, self.tv, self.ntv, self.ov = self._train(self.tv, self.ntv, self.ov,
                                                       self.xt, self.yt)
        loss.block_until_ready()
        return float(loss)


class TFConfig(Config):
    def prepare(self):
        import keras
        from keras_mld.losses import AsymmetricLoss

        self.gflops = tf_flops(self.model, self.x.shape[1:]) / 1e9
        self.model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=AsymmetricLoss(),
                           metrics=[], jit_compile=self.jit)  # no metric in the timed step

    def infer(self):
        self.model.predict_on_batch(self.x)

    def train(self):
        return float(self.model.train_on_batch(self.xt, self.yt))

    def measure_memory(self):
        import tensorflow as tf

        if on_accelerator(self.info):
            tf.config.experimental.reset_memory_stats("GPU:0")
            self.train()
            self.memory = tf.config.experimental.get_memory_info("GPU:0")["peak"]
            return
        base = _reset_peak_rss()
        self.train()
        peak = _status_kb("VmHWM")
        if base is not None and peak is not None:
            self.memory = max(0, peak - base) * 1024


def _status_kb(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss():
    """Resets VmHWM to the current RSS (Linux); returns the current RSS in kB or None."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _status_kb("VmRSS")


def tf_flops(model, image_shape):
    """FLOPs of one forward pass at batch 1, counted on the TF graph (see module doc)."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec((1,) + tuple(image_shape), tf.float32))
    opts = option_builder.ProfileOptionBuilder(
        option_builder.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    total = model_analyzer.profile(graph=concrete.graph, options=opts).total_float_ops
    for op in concrete.graph.get_operations():
        if op.type == "Einsum":
            total += _einsum_flops(op.get_attr("equation").decode(),
                                   [t.shape.as_list() for t in op.inputs])
    return float(total)


def _einsum_flops(equation, shapes):
    lhs = equation.replace(" ", "").split("->")[0].split(",")
    sizes = {}
    for letters, shape in zip(lhs, shapes):
        if "." in letters or None in shape:
            return 0
        sizes.update(zip(letters, shape))
    return 2 * int(np.prod(list(sizes.values()), dtype=np.int64)) if len(lhs) > 1 else 0


# --------------------------------------------------------------------------- run
def run(args, log=print):
    import keras

    previous = keras.mixed_precision.global_policy()
    if args.dtype_policy:
        keras.mixed_precision.set_global_policy(args.dtype_policy)
    try:
        return _run(args, log)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _run(args, log):
    info = machine_info()
    backend = info["backend"]
    if backend == "jax":
        jits, cls = (True,), JaxConfig
    elif backend == "tensorflow":
        jits = {"both": (False, True), "on": (True,), "off": (False,)}[args.jit]
        cls = TFConfig
    else:
        raise ValueError(f"KERAS_BACKEND: the benchmark supports jax and tensorflow, got {backend}")
    configs = []
    for n in args.classes:
        for head in args.heads:
            for jit in jits:
                t0 = time.perf_counter()
                try:
                    cfg = cls(args, head, n, jit, info)
                    cfg.prepare()
                    for _ in range(args.warmup):
                        cfg.infer()
                        if cfg.train_enabled:
                            cfg.train()
                    if cfg.train_enabled and cls is TFConfig:  # after warm-up: no tracing
                        cfg.measure_memory()
                except Exception as err:  # OOM and the like: reported in the table
                    cfg = Config.__new__(Config)
                    cfg.head, cfg.n, cfg.jit, cfg.error = head, n, jit, _short(err)
                    cfg.times, cfg.params, cfg.gflops, cfg.memory = {}, None, None, None
                phases = ", ".join(f"{k} {v:.1f}s" for k, v in getattr(cfg, "phases", {}).items())
                log(f"[bench] built {head} N={n} jit={jit} in {time.perf_counter() - t0:.1f}s"
                    + (f" ({phases})" if phases else "")
                    + (f" ERROR {cfg.error}" if cfg.error else ""))
                configs.append(cfg)
    live = [c for c in configs if not c.error]
    for rep in range(args.reps):
        for cfg in live:
            if cfg.error:
                continue
            try:
                for kind in ("infer", "train") if cfg.train_enabled else ("infer",):
                    step = cfg.infer if kind == "infer" else cfg.train
                    t0 = time.perf_counter()
                    for _ in range(args.iters):
                        step()
                    dt = time.perf_counter() - t0
                    b = cfg.batch if kind == "infer" else cfg.train_batch
                    cfg.times[kind].append(b * args.iters / dt)
            except Exception as err:
                cfg.error = _short(err)
        log(f"[bench] repetition {rep + 1}/{args.reps} done")
    if backend == "jax":  # process-wide device peak (all configurations together), if reported
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            info["device_peak_MiB"] = round(stats["peak_bytes_in_use"] / 2 ** 20, 1)
    rows = []
    for cfg in configs:
        t = cfg.times or {}
        rows.append({"head": cfg.head, "N": cfg.n, "jit": cfg.jit, "params": cfg.params,
                     "gflops": cfg.gflops, "memory": cfg.memory, "error": cfg.error,
                     "infer": statistics.median(t["infer"]) if t.get("infer") else None,
                     "train": statistics.median(t["train"]) if t.get("train") else None,
                     "infer_reps": list(t.get("infer") or []),
                     "train_reps": list(t.get("train") or [])})
    return info, add_ratios(rows)


def _short(err):
    text = f"{type(err).__name__}: {err}".replace("\n", " ").replace("|", "/")
    return text[:120]


def main(argv=None):
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    from keras_mld.app import bench_report

    t0 = time.perf_counter()
    info, rows = run(args, log=lambda m: print(m, file=sys.stderr, flush=True))
    info["wall_s"] = round(time.perf_counter() - t0, 1)
    text = bench_report.render(args, info, rows)
    print(text)
    if args.output != "-":
        path = args.output or "BENCHMARKS.md"  # the current directory, never the package
        bench_report.write_section(path, bench_report.section_name(args, info), text)
        print(f"[bench] wrote {path}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": rows, "checks": bench_report.checks(rows)}, f,
                      indent=1, default=str)
    return 0
