"""Where the time of an ML-Decoder model goes: backbone vs head vs the head's stages.

    KERAS_BACKEND=tensorflow python benchmarks/profile_head.py --backbone efficientnetv2_s \
        --size 448 --classes 100 --batch 4 --reps 7

Times, on the TensorFlow backend, with and without ``jit_compile``, each part on its own
(a ``tf.function`` of a Keras model of that part, inputs of the shape the part sees in the
full model): the backbone, a GAP head, the whole ML-Decoder head, and the stages of one
ML-Decoder (eq. 1-6 of the paper): token embedding (Dense C -> D + ReLU), the queries +
cross-attention (Keras ``MultiHeadAttention``), the feed-forward block, the three LayerNorms
with their residual adds, and GroupDense. FLOPs are counted on each part's graph
(``keras_mld.app.bench.tf_flops``); the table gives each part's FLOP rate (GFLOP/s) and its
rate relative to the backbone's: a part whose relative rate is >= 1 runs at least as
efficiently as the backbone, which is what the FLOP bound of ``benchmarks/heads.py``
assumes. ``--train`` times forward + gradients (for the part's weights and its input)
instead, i.e. the part's share of a training step. Parts are timed round-robin, ``--reps``
times, medians. Hand-written (not the TF
profiler) because the profiler's per-op trace on CPU does not group ops by model stage.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="efficientnetv2_s")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--num-groups", type=int, default=100)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--jit", choices=("both", "on", "off"), default="both")
    p.add_argument("--train", action="store_true",
                   help="time forward + backward (gradients for the part's weights and its "
                        "input, as inside a training step) instead of the forward pass")
    p.add_argument("--output", default=None, help="also write the table as a section of this "
                                                   "markdown file (e.g. BENCHMARKS.md)")
    p.add_argument("--section", default=None, help="section name (default profile-<backbone>-<size>)")
    args = p.parse_args(argv)
    args.argv = list(argv or [])
    return args


def parts(args):
    """``{name: (keras.Model, input shape without batch)}``."""
    import keras
    from keras_mld.models.builder import create_backbone
    from keras_mld.layers import MLDecoder

    backbone = create_backbone(args.backbone, (args.size, args.size, 3))
    fshape = tuple(backbone.output.shape[1:])
    tokens = fshape[0] * fshape[1]
    dec = MLDecoder(args.classes, num_groups=args.num_groups)
    dec.build((None,) + fshape)
    layer = dec.decoder_layers[0]
    d = dec.embed_dim

    def model(shape, fn):
        x = keras.Input(shape)
        return keras.Model(x, fn(x)), shape

    def attention(e):
        return layer.attention(query=dec.queries(e), value=e, key=e)

    def norms(t):  # the three residual adds + LayerNorms of one decoder layer
        t = layer.norm1(t + t)
        t = layer.norm2(t + t)
        return layer.norm3(t + t)

    gap = keras.layers.Dense(args.classes)
    return {
        "backbone": (backbone, (args.size, args.size, 3)),
        "gap head": model(fshape, lambda x: gap(keras.layers.GlobalAveragePooling2D()(x))),
        "ML-Decoder head": model(fshape, dec),
        "  embed (Dense C->D, ReLU)": model((tokens, fshape[-1]), dec.embed),
        "  queries + cross-attention": model((tokens, d), attention),
        "  feed-forward": model((args.num_groups, d), lambda t: layer.linear2(layer.linear1(t))),
        "  3 x (residual + LayerNorm)": model((args.num_groups, d), norms),
        "  GroupDense": model((args.num_groups, d), dec.group_dense),
    }


def train_step(model):
    """``x -> scalar``: forward (training=True) + gradients for the weights and ``x``."""
    import tensorflow as tf

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = model(x, training=True)
            loss = tf.reduce_sum(out * out)
        grads = tape.gradient(loss, [x] + model.trainable_variables)
        return tf.add_n([tf.reduce_sum(g) for g in grads if g is not None])

    return step


def measure(args):
    """Rows ``{part, jit, gflops, seconds (per image, median)}``, timed round-robin."""
    import tensorflow as tf

    from keras_mld.app.bench import tf_flops

    jits = {"both": (False, True), "on": (True,), "off": (False,)}[args.jit]
    rng = np.random.default_rng(0)
    runs = []
    for name, (model, shape) in parts(args).items():
        x = tf.constant(rng.uniform(0, 1, (args.batch,) + shape).astype("float32"))
        gflops = tf_flops(model, shape) / 1e9
        for jit in jits:
            fn = tf.function(train_step(model) if args.train else model, jit_compile=jit,
                             reduce_retracing=True)
            fn(x)  # trace + compile
            runs.append({"part": name, "jit": jit, "fn": fn, "x": x, "gflops": gflops,
                         "times": []})
    for _ in range(args.reps):
        for r in runs:
            t0 = time.perf_counter()
            for _ in range(args.iters):
                out = r["fn"](r["x"])
            np.asarray(out)  # wait for the result (CPU; on a GPU, .numpy() syncs too)
            r["times"].append((time.perf_counter() - t0) / (args.iters * args.batch))
    return [{"part": r["part"], "jit": r["jit"], "gflops": r["gflops"],
             "seconds": statistics.median(r["times"])} for r in runs]


def render(args, rows):
    import tensorflow as tf

    mult = 3 if args.train else 1  # training FLOPs ~ 3 x forward (forward + 2 x backward)
    lines = [f"### Where the time goes ({'training step' if args.train else 'inference'}): "
             f"{args.backbone} {args.size}px, ML-Decoder "
             f"N={args.classes} K={args.num_groups}, TensorFlow {tf.__version__}, "
             f"{os.cpu_count()} CPU cores", "",
             f"- command: `python benchmarks/profile_head.py {' '.join(args.argv)}`".rstrip(),
             f"- batch {args.batch}; median of {args.reps} round-robin repetitions of "
             f"{args.iters} calls; each part a tf.function of its own Keras model"
             + ("; training: forward + gradients for the part's weights and input, "
                "GFLOP/s counted as 3 x forward GFLOPs" if args.train else ""), "",
             "| part | jit | GFLOPs/img | ms/img | share of backbone+ML-Decoder time | "
             "share of FLOPs | GFLOP/s | rate / backbone rate |",
             "|---|---|---|---|---|---|---|---|"]
    for jit in sorted({r["jit"] for r in rows}):
        rs = [r for r in rows if r["jit"] == jit]
        get = {r["part"]: r for r in rs}
        total_t = get["backbone"]["seconds"] + get["ML-Decoder head"]["seconds"]
        total_f = get["backbone"]["gflops"] + get["ML-Decoder head"]["gflops"]
        base_rate = get["backbone"]["gflops"] / get["backbone"]["seconds"]
        for r in rs:
            t, f = r["seconds"], r["gflops"]
            lines.append(f"| {r['part']} | {jit} | {f:.3f} | {1e3 * t:.2f} | {t / total_t:.3f} | "
                         f"{f / total_f:.3f} | {mult * f / t:.1f} | {(f / t) / base_rate:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    text = render(args, measure(args))
    print(text)
    if args.output:
        from keras_mld.app import bench_report

        name = args.section or f"profile-{args.backbone}-{args.size}"
        bench_report.write_section(args.output, name, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
