"""CPU throughput of one model in three runtimes: TensorFlow (the SavedModel's
``serving_default``), ONNX Runtime and OpenVINO.

    python benchmarks/runtimes.py --backbone efficientnetv2_s --size 224 --batch 8 --reps 10

Builds ``backbone`` + ML-Decoder (``weights=None``: speed does not depend on the weights),
exports it with ``export_saved_model``, ``export_onnx`` and ``export_openvino`` (each
verified against TensorFlow at export), then times each runtime in its own fresh process
(TensorFlow in one that cannot import keras, the others in ones that cannot import
TensorFlow either), ``--rounds`` times round-robin so that load from other jobs on the
machine falls on all runtimes alike. Per round: ``--warmup`` untimed calls, then ``--reps``
timed calls on the same ``[batch, H, W, 3]`` batch; img/s = batch / median call time; the
table gives the median over rounds and the ratio to TensorFlow. OpenVINO is timed compiled
as the export says (``INFERENCE_PRECISION_HINT=f32``) and, for reference, with the CPU
plugin's default (bfloat16 where the CPU has it: faster, but not the same model; its max
score difference is reported). Every runtime's scores are compared with TensorFlow's.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def time_runtime(runtime, path, inputs, warmup, reps, out):
    """Child: only numpy + the one runtime."""
    blocked = ["keras", "keras_mld", "tf_keras", "jax"]
    if runtime != "tensorflow":
        blocked += ["tensorflow", "tf2onnx"]
    for name in blocked:
        sys.modules[name] = None
    import numpy as np

    x = np.load(inputs)
    if runtime == "tensorflow":
        import tensorflow as tf

        fn = tf.saved_model.load(path).signatures["serving_default"]
        xt = tf.constant(x)

        def run():
            return fn(images=xt)["scores"].numpy()
    elif runtime == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

        def run():
            return session.run(["scores"], {"images": x})[0]
    else:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(os.path.join(path, "model.xml"))
        config = {} if runtime == "openvino-default" else json.loads(
            str(model.get_rt_info()["keras_mld"]["compile_config"].astype(str)))
        compiled = core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()

        def run():
            return request.infer({"images": x})["scores"].copy()

    for _ in range(warmup):
        scores = run()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        scores = run()
        times.append(time.perf_counter() - start)
    np.save(out, scores)
    print(json.dumps({"median_s": statistics.median(times)}))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="efficientnetv2_s")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--markdown", help="append the table to this file")
    return p.parse_args(argv)


RUNTIMES = ("tensorflow", "onnxruntime", "openvino", "openvino-default")


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, os.path.dirname(HERE))
    import numpy as np

    import keras_mld
    from keras_mld.export import export_onnx, export_openvino, export_saved_model

    model = keras_mld.build(args.backbone, head="mldecoder", num_classes=args.classes,
                            input_shape=(args.size, args.size, 3), weights=None)
    labels = [f"c{i}" for i in range(args.classes)]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        paths = {"tensorflow": export_saved_model(model, os.path.join(tmp, "sm"), labels)}
        export_s = {"savedmodel": time.perf_counter() - start}
        start = time.perf_counter()
        paths["onnxruntime"] = export_onnx(model, os.path.join(tmp, "m.onnx"), labels)
        export_s["onnx"] = time.perf_counter() - start
        start = time.perf_counter()
        paths["openvino"] = export_openvino(model, os.path.join(tmp, "ov"), labels)
        export_s["openvino"] = time.perf_counter() - start
        paths["openvino-default"] = paths["openvino"]
        x = np.random.default_rng(0).uniform(0, 255, (args.batch, args.size, args.size, 3))
        np.save(os.path.join(tmp, "x.npy"), x.astype(np.float32))
        medians = {r: [] for r in RUNTIMES}
        scores = {}
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        for _ in range(args.rounds):
            for runtime in RUNTIMES:
                out = os.path.join(tmp, f"{runtime}.npy")
                proc = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "time", runtime,
                     paths[runtime], os.path.join(tmp, "x.npy"), str(args.warmup),
                     str(args.reps), out], capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    raise RuntimeError(f"{runtime}: {proc.stderr[-2000:]}")
                medians[runtime].append(json.loads(proc.stdout.strip().splitlines()[-1])
                                        ["median_s"])
                scores[runtime] = np.load(out)
    cores = len(os.sched_getaffinity(0))
    rate = {r: args.batch / statistics.median(v) for r, v in medians.items()}
    lines = [f"### Runtimes on CPU: {args.backbone} + ML-Decoder {args.size}px, N={args.classes},"
             f" batch {args.batch}, {cores} CPU cores (shared)", "",
             "| runtime | img/s | ratio to TensorFlow | max abs score diff vs TF |",
             "|---|---|---|---|"]
    names = {"tensorflow": "TensorFlow SavedModel (`serving_default`)",
             "onnxruntime": "ONNX Runtime (CPUExecutionProvider)",
             "openvino": "OpenVINO CPU, f32 (as exported)",
             "openvino-default": "OpenVINO CPU, plugin default precision (not the same model)"}
    for r in RUNTIMES:
        diff = float(np.max(np.abs(scores[r] - scores["tensorflow"])))
        lines.append(f"| {names[r]} | {rate[r]:.1f} | {rate[r] / rate['tensorflow']:.2f} | "
                     f"{diff:.1e} |")
    lines += ["", "Export time: " + ", ".join(f"{k} {v:.0f} s" for k, v in export_s.items())
              + f". Medians of {args.reps} calls per round, {args.rounds} rounds round-robin, "
              "each runtime in its own fresh process."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "time":
        time_runtime(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]),
                     sys.argv[7])
    else:
        sys.exit(main())
