"""CPU throughput (and, on a trained model, mAP) of one model in six runtime / precision
pairs: TensorFlow f32 (the SavedModel's ``serving_default``), ONNX Runtime f32 and int8,
OpenVINO f32, bf16 and int8.

    # speed only (random weights): backbone + ML-Decoder
    python benchmarks/runtimes.py --backbone efficientnetv2_s --size 224 --batch 8
    # the demo's trained model (keras-mld demo): speed and real mAP on its validation split
    python benchmarks/runtimes.py --model runs/demo/preset \
        --data runs/demo/data/instances_val.json \
        --calibration-data runs/demo/data/instances_train.json --batch 8

Exports with ``export_saved_model``, ``export_onnx(precision=...)`` and
``export_openvino(precision=...)`` (f32 verified against TensorFlow at export; int8
calibrated on ``--calibration-size`` images of ``--calibration-data``, or on random pixels
for a random-weights model, where ``--max-map-drop`` is lifted: its mAP means nothing),
then times each file in its own fresh process (TensorFlow in one that cannot import keras,
the others in ones that cannot import TensorFlow either), compiled / run with the session
options and ``compile_config`` the export recorded, ``--rounds`` times round-robin so that
load from other jobs on the machine falls on all runtimes alike. Per round: ``--warmup``
untimed calls, then ``--reps`` timed calls on the same ``[batch, H, W, 3]`` batch; img/s =
batch / median call time; the table gives the median over rounds and the ratio to
TensorFlow. ``--busy N`` keeps N processes spinning on the CPU during the timings (a
machine whose cores other jobs share, made reproducible). With ``--data`` each process
also scores the whole validation set, and the table gives its mAP
(``keras_mld.metrics.mean_average_precision``) next to the mAP the export recorded in its
metadata.
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
    val = np.load(inputs.replace("x.npy", "val.npy")) if os.path.exists(
        inputs.replace("x.npy", "val.npy")) else None
    if runtime == "tensorflow":
        import tensorflow as tf

        fn = tf.saved_model.load(path).signatures["serving_default"]

        def run(batch):
            return fn(images=tf.constant(batch))["scores"].numpy()
    elif runtime.startswith("onnxruntime"):
        import onnxruntime as ort

        proto_meta = ort.InferenceSession(path, providers=["CPUExecutionProvider"]) \
            .get_modelmeta().custom_metadata_map
        recorded = json.loads(proto_meta["keras_mld.session_options"])
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                                   recorded["graph_optimization_level"])
        options.intra_op_num_threads = recorded["intra_op_num_threads"]
        for key, value in recorded.get("session_configs", {}).items():
            options.add_session_config_entry(key, value)
        if runtime.endswith("-defaults"):  # for reference: what a plain session does
            options = ort.SessionOptions()
        session = ort.InferenceSession(path, options, providers=recorded["providers"])

        def run(batch):
            return session.run(["scores"], {"images": batch})[0]
    else:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(os.path.join(path, "model.xml"))
        config = json.loads(str(model.get_rt_info()["keras_mld"]["compile_config"].astype(str)))
        compiled = core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()

        def run(batch):
            return request.infer({"images": batch})["scores"].copy()

    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    if val is not None:
        np.save(out, np.concatenate([run(val[i:i + 32]) for i in range(0, len(val), 32)]))
    print(json.dumps({"median_s": statistics.median(times)}))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="efficientnetv2_s")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--model", help="a trained .keras file or preset folder (else: backbone + "
                                   "ML-Decoder, random weights)")
    p.add_argument("--data", help="labelled validation data (COCO .json, .csv, image folder)")
    p.add_argument("--calibration-data", help="int8 calibration images (default: --data)")
    p.add_argument("--calibration-size", type=int, default=300)
    p.add_argument("--max-map-drop", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--busy", type=int, default=0,
                   help="processes spinning on the CPU during the timings (a machine whose "
                        "cores other jobs share, made reproducible)")
    p.add_argument("--markdown", help="append the table to this file")
    return p.parse_args(argv)


RUNTIMES = ("tensorflow", "onnxruntime-f32", "onnxruntime-f32-defaults", "onnxruntime-int8",
            "openvino-f32", "openvino-bf16", "openvino-int8")
NAMES = {"tensorflow": "TensorFlow SavedModel f32 (`serving_default`)",
         "onnxruntime-f32": "ONNX Runtime f32 (recorded session options)",
         "onnxruntime-f32-defaults": "ONNX Runtime f32, default session options",
         "onnxruntime-int8": "ONNX Runtime int8 (QDQ)",
         "openvino-f32": "OpenVINO CPU f32", "openvino-bf16": "OpenVINO CPU bf16",
         "openvino-int8": "OpenVINO CPU int8 (NNCF)"}


def time_all(args, paths, tmp, env, with_scores):
    """``--rounds`` round-robin rounds over :data:`RUNTIMES`, each file in a fresh child:
    ``(medians per runtime, validation scores per runtime, load averages seen)``."""
    import numpy as np

    medians = {r: [] for r in RUNTIMES}
    scores = {}
    load = [os.getloadavg()[0]]
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
            if with_scores:
                scores[runtime] = np.load(out)
            load.append(os.getloadavg()[0])
    return medians, scores, load


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, os.path.dirname(HERE))
    import numpy as np

    import keras_mld
    from keras_mld.export import deploy, export_onnx, export_openvino, export_saved_model
    from keras_mld.export.onnx import read_metadata as onnx_meta
    from keras_mld.export.openvino import read_metadata as ov_meta
    from keras_mld.export.precision import load_images
    from keras_mld.metrics import mean_average_precision

    if args.model:
        from keras_mld.app.workflows import load_classifier

        model = load_classifier(args.model)
        title = f"{os.path.basename(os.path.normpath(args.model))} (trained)"
    else:
        model = keras_mld.build(args.backbone, head="mldecoder", num_classes=args.classes,
                                input_shape=(args.size, args.size, 3), weights=None)
        title = f"{args.backbone} + ML-Decoder, random weights"
    labels = list(getattr(model, "class_names", None) or
                  [f"c{i}" for i in range(args.classes)])
    meta = deploy.deploy_metadata(model, labels)
    height, width = meta["image_size"]
    rng = np.random.default_rng(0)
    if args.data:
        val_x, val_y = load_images(args.data, meta, 10 ** 9, "runtimes", "--data")
        calib = args.calibration_data or args.data
        reduced = {"calibration_data": calib, "validation_data": (val_x, val_y),
                   "calibration_size": args.calibration_size,
                   "max_map_drop": args.max_map_drop}
        x = val_x[:args.batch]
    else:
        val_x = val_y = None
        fake = rng.uniform(0, 255, (16, height, width, 3)).astype(np.float32)
        fake_y = (rng.uniform(size=(16, len(labels))) < 0.5).astype(np.float32)
        reduced = {"calibration_data": (fake, fake_y), "max_map_drop": 100.0}
        x = rng.uniform(0, 255, (args.batch, height, width, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        export_s, paths = {}, {}

        def timed(key, fn, *a, **kw):
            start = time.perf_counter()
            paths[key] = fn(*a, **kw)
            export_s[key] = time.perf_counter() - start

        timed("tensorflow", export_saved_model, model, os.path.join(tmp, "sm"), labels)
        timed("onnxruntime-f32", export_onnx, model, os.path.join(tmp, "f32.onnx"), labels)
        timed("onnxruntime-int8", export_onnx, model, os.path.join(tmp, "int8.onnx"), labels,
              precision="int8", **reduced)
        timed("openvino-f32", export_openvino, model, os.path.join(tmp, "ov32"), labels)
        bf16 = {k: v for k, v in reduced.items() if k != "calibration_data"}
        bf16.setdefault("validation_data", reduced["calibration_data"])
        timed("openvino-bf16", export_openvino, model, os.path.join(tmp, "ovbf16"), labels,
              precision="bf16", **bf16)
        timed("openvino-int8", export_openvino, model, os.path.join(tmp, "ov8"), labels,
              precision="int8", **reduced)
        paths["onnxruntime-f32-defaults"] = paths["onnxruntime-f32"]
        recorded = {k: (onnx_meta(p) if k.startswith("onnx") else ov_meta(p)).get("accuracy")
                    for k, p in paths.items() if k != "tensorflow"}
        np.save(os.path.join(tmp, "x.npy"), x.astype(np.float32))
        if val_x is not None:
            np.save(os.path.join(tmp, "val.npy"), val_x.astype(np.float32))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(args.busy)]
        try:
            medians, scores, load = time_all(args, paths, tmp, env, val_x is not None)
        finally:
            for proc in busy:
                proc.kill()
    cores = len(os.sched_getaffinity(0))
    rate = {r: args.batch / statistics.median(v) for r, v in medians.items()}
    shared = f", {args.busy} busy processes" if args.busy else ""
    lines = [f"### Runtimes on CPU: {title}, {height}px, N={len(labels)}, batch {args.batch}, "
             f"{cores} CPU cores{shared}", "",
             "| runtime | img/s | ratio to TF | mAP (this run) | mAP recorded in the file "
             "(drop vs f32, points) | max abs score diff vs TF |", "|---|---|---|---|---|---|"]
    for r in RUNTIMES:
        if val_x is not None:
            got = scores[r]
            m = f"{100 * mean_average_precision(val_y, got):.2f}"
            diff = f"{float(np.max(np.abs(got - scores['tensorflow']))):.1e}"
        else:
            m, diff = "-", "-"
        rec = recorded.get(r)
        rec = (f"{100 * rec['mAP']:.2f} ({rec['mAP_drop_points']:+.2f})"
               if rec and val_x is not None else "-")
        lines.append(f"| {NAMES[r]} | {rate[r]:.1f} | {rate[r] / rate['tensorflow']:.2f} | {m} "
                     f"| {rec} | {diff} |")
    lines += ["", "Export time: " + ", ".join(f"{k} {v:.0f} s" for k, v in export_s.items())
              + f". Medians of {args.reps} calls per round, {args.rounds} rounds round-robin, "
              "each runtime in its own fresh process. Load average (1 min) during the "
              f"timings: {min(load):.1f}-{max(load):.1f} on {cores} cores"
              + (f", with {args.busy} processes spinning beside them (--busy)"
                 if args.busy else "") + "."]
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
