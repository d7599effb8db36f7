"""``keras-mld`` command: argparse front end over :mod:`keras_mld.app.workflows`, the demos,
``export`` and the head benchmark. No logic of its own.

Each sub-command is one ``_add_<name>(sub)`` function that declares its parser and sets its
handler (``_run_<name>(args)``); :data:`COMMANDS` lists them. Nothing here imports Keras or
TensorFlow at module level: ``keras-mld --help`` and every ``keras-mld <command> --help``
answer without them, and the handlers import what they need. Before a handler runs,
TensorFlow is imported with its C++ start-up lines below ``TF_CPP_MIN_LOG_LEVEL`` dropped
(default "2": errors only; a value set in the environment wins).
"""
import argparse
import json
import os
import re
import sys
import tempfile

from keras_mld.version import __version__

DEFAULT_TF_LOG_LEVEL = "2"
# C++ log lines: absl ("I0000 00:00:17.. 123 port.cc:153] ...") and TensorFlow's older
# format ("2025-09-17 14:44:05.157831: I external/..."); the group is the severity letter.
_LOG_LINE = re.compile(r"^(?:([IWEF])\d{4} \d\d:\d\d:\d\d|\d{4}-\d\d-\d\d [\d:.]+: ([IWEF]) )")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_NO_GPU = "failed call to cuInit"


# --------------------------------------------------------------------------- sub-commands
def _add_demo(sub):
    d = sub.add_parser("demo", help="train GAP and ML-Decoder on the embedded digits, report, export")
    d.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    d.add_argument("--recipe", default="demo", help="recipe name or path (default demo)")
    d.add_argument("--tiny", action="store_true", help="a seconds-long run of the whole path")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-export", action="store_true")
    d.add_argument("--zsl", action="store_true", help="the zero-shot demo (seen/unseen digits)")
    d.set_defaults(handler=_run_demo)


def _run_demo(args):
    if args.zsl:
        from keras_mld.app.zsl_demo import run_zsl_demo
        run_zsl_demo(out=args.out, tiny=args.tiny, seed=args.seed)
        return 0
    from keras_mld.app.demo import run_demo
    run_demo(out=args.out, recipe=args.recipe, tiny=args.tiny, seed=args.seed,
             export=not args.no_export)
    return 0


def _add_train(sub):
    t = sub.add_parser("train", help="train a recipe on a dataset")
    t.add_argument("--recipe", required=True, help="packaged recipe name or YAML path")
    t.add_argument("--data", required=True, help="COCO instances .json, .csv or image folder")
    t.add_argument("--val-data", help="validation data, same formats")
    t.add_argument("--out", required=True, help="run directory (resumes if it has a backup)")
    t.add_argument("--backbone")
    t.add_argument("--head")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", "--global-batch-size", type=int, dest="batch_size",
                   help="global batch size, summed over all replicas and workers")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--strategy", default="default",
                   choices=("default", "mirrored", "multiworker", "tpu"),
                   help="tf.distribute strategy (multiworker reads TF_CONFIG; "
                        "see the README section on distributed training)")
    t.add_argument("--lr-scaling", default="none", choices=("none", "linear", "sqrt"),
                   help="scale the recipe lr from its reference batch to the global batch")
    t.add_argument("--word-vectors", help="label word vectors of a zero-shot recipe "
                   "(mldecoder_nus_zsl): a GloVe / word2vec text file or glove-6b-50d")
    t.set_defaults(handler=_run_train)


def _run_train(args):
    from keras_mld.app import workflows
    workflows.train(args.recipe, args.data, args.out, val_data=args.val_data,
                    backbone=args.backbone, head=args.head, epochs=args.epochs,
                    batch_size=args.batch_size, seed=args.seed,
                    strategy=args.strategy, lr_scaling=args.lr_scaling,
                    word_vectors=args.word_vectors)
    return 0


def _add_data(sub):
    d = sub.add_parser("data", help="dataset tools: pack a dataset into TFRecord shards")
    dsub = d.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("pack", help="write a dataset as TFRecord shards (FILE sharding "
                                     "across workers; make_dataset and train read the folder)")
    p.add_argument("--data", required=True, help="COCO instances .json, .csv or image folder")
    p.add_argument("--out", required=True, help="the shard folder to create")
    p.add_argument("--num-shards", type=int, default=8,
                   help="number of shards (at least the number of workers; default 8)")
    p.add_argument("--overwrite", action="store_true")
    d.set_defaults(handler=_run_data)


def _run_data(args):
    from keras_mld.app import workflows
    packed = workflows.pack(args.data, args.out, num_shards=args.num_shards,
                            overwrite=args.overwrite)
    print(f"{args.out}: {len(packed)} images in {len(packed.files)} shards, "
          f"{packed.num_classes} classes")
    return 0


def _add_evaluate(sub):
    e = sub.add_parser("evaluate", help="multi-label report of a .keras model on a dataset")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--batch-size", type=int, default=32)
    e.set_defaults(handler=_run_evaluate)


def _run_evaluate(args):
    from keras_mld.app import workflows
    print(json.dumps(workflows.evaluate(args.model, args.data, args.batch_size), indent=1))
    return 0


def _add_export(sub):
    x = sub.add_parser("export", help="export a .keras model or preset: TF Serving SavedModel, "
                                      "ONNX or OpenVINO IR")
    x.add_argument("--model", required=True, help=".keras file or preset folder")
    x.add_argument("--format", default="savedmodel", choices=("savedmodel", "onnx", "openvino"))
    x.add_argument("--out", required=True,
                   help="savedmodel: base directory (versions go below it); onnx: the .onnx "
                        "file; openvino: the directory for model.xml/model.bin")
    x.add_argument("--labels", help="class names, one a line (default: the model's own)")
    x.add_argument("--thresholds", help="JSON list of per-class thresholds, or one float "
                                        "(default: the model's own)")
    x.add_argument("--version", type=int, help="savedmodel only")
    x.add_argument("--overwrite", action="store_true")
    x.add_argument("--max-image-pixels", type=int, default=40_000_000,
                   help="savedmodel: predict_images refuses larger images (default 40,000,000)")
    x.add_argument("--max-batch-size", type=int, default=256,
                   help="savedmodel: predict_images refuses larger requests (default 256)")
    x.add_argument("--max-request-bytes", type=int, default=32 * 2 ** 20,
                   help="savedmodel: predict_images refuses requests of more encoded bytes "
                        "(default 33554432 = 32 MiB)")
    x.add_argument("--precision", default="f32", choices=("f32", "bf16", "int8"),
                   help="onnx: f32 or int8; openvino: f32, bf16 or int8 (default f32). A "
                        "reduced precision is measured (mAP, per-class F1, max score "
                        "difference vs f32), recorded in the file and refused beyond "
                        "--max-map-drop")
    x.add_argument("--calibration-data",
                   help="int8: calibration images, a dataset as --data takes (COCO .json, "
                        ".csv or image folder)")
    x.add_argument("--calibration-size", type=int, default=300,
                   help="int8: at most this many calibration images (default 300)")
    x.add_argument("--validation-data",
                   help="bf16/int8: labelled images to measure on (default: the calibration "
                        "data)")
    x.add_argument("--max-map-drop", type=float, default=1.0,
                   help="bf16/int8: refuse the export when mAP drops by more points (default "
                        "1.0)")
    x.set_defaults(handler=_run_export)


def _run_export(args):
    from keras_mld.app import workflows
    from keras_mld.export import export_onnx, export_openvino, export_saved_model
    model = workflows.load_classifier(args.model)
    from keras_mld.untrusted import parse_json
    thresholds = parse_json(args.thresholds, "export: --thresholds") if args.thresholds \
        else None
    labels = None
    if args.labels:
        with open(args.labels, encoding="utf-8") as f:
            labels = [line.strip() for line in f if line.strip()]
    if args.format == "savedmodel":
        if args.precision != "f32" or args.calibration_data or args.validation_data:
            raise ValueError("--precision, --calibration-data, --validation-data: only for "
                             "--format onnx or openvino")
        path = export_saved_model(model, args.out, labels, thresholds=thresholds,
                                         version=args.version, overwrite=args.overwrite,
                                         max_image_pixels=args.max_image_pixels,
                                         max_batch_size=args.max_batch_size,
                                         max_request_bytes=args.max_request_bytes)
    else:
        if args.version is not None:
            raise ValueError("--version: only for --format savedmodel")
        fn = export_onnx if args.format == "onnx" else export_openvino
        path = fn(model, args.out, labels, thresholds=thresholds, overwrite=args.overwrite,
                  precision=args.precision, calibration_data=args.calibration_data,
                  calibration_size=args.calibration_size,
                  validation_data=args.validation_data, max_map_drop=args.max_map_drop)
        if args.precision != "f32":
            from keras_mld.export import onnx, openvino, precision
            reader = onnx.read_metadata if args.format == "onnx" else openvino.read_metadata
            print(precision.summary(reader(path)["accuracy"]))
    print(path)
    return 0


def _add_predict(sub):
    r = sub.add_parser("predict", help="labels and scores for image files")
    r.add_argument("images", nargs="+")
    r.add_argument("--model", required=True,
                   help=".keras file, preset folder or exported SavedModel directory")
    r.add_argument("--top-k", type=int, default=5)
    r.add_argument("--threshold", type=float,
                   help="one threshold for every class (default: the model's per-class ones)")
    r.set_defaults(handler=_run_predict)


def _run_predict(args):
    from keras_mld.app import workflows
    for path, picked in workflows.predict(args.model, args.images, args.top_k, args.threshold):
        print(path + ": " + ", ".join(f"{name} {score:.3f}" for name, score in picked))
    return 0


def _add_convert(sub):
    c = sub.add_parser("convert",
                       help="official ML-Decoder / timm TResNet checkpoint -> preset or .keras")
    c.add_argument("checkpoint", help=".pth/.pt (torch not needed), .safetensors or .npz")
    c.add_argument("--out", required=True,
                   help="a folder (an ImageClassifier preset: config, weights, class names) "
                        "or a .keras path")
    c.add_argument("--image-size", type=int, default=224,
                   help="input side (official: TResNet-M 224, L 448, XL 640; default 224)")
    c.add_argument("--num-heads", type=int, default=8, help="attention heads (official: 8)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    c.set_defaults(handler=_run_convert)


def _run_convert(args):
    from keras_mld.app.workflows import convert
    print(convert(args.checkpoint, args.out, image_size=args.image_size,
                                      num_heads=args.num_heads, overwrite=args.overwrite))
    return 0


def _add_bench(sub):
    # bench's own parser (keras_mld.app.bench) reads every argument after "bench", options first
    # included: add_help=False sends "--help" there too, and main() hands over the rest.
    b = sub.add_parser("bench", add_help=False, help="head benchmarks (keras-mld bench --help)")
    b.set_defaults(handler=_run_bench, takes_extra_args=True)


def _run_bench(args):
    from keras_mld.app.bench import main as bench_main
    return bench_main(args.extra_args)


COMMANDS = (_add_demo, _add_train, _add_data, _add_evaluate, _add_export, _add_predict, _add_convert,
            _add_bench)


def build_parser():
    p = argparse.ArgumentParser(prog="keras-mld", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return p


# --------------------------------------------------------------------------- TF start-up
def _keras_backend():
    """The backend Keras will pick, read without importing Keras (env, then keras.json)."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        from keras_mld.untrusted import MAX_STATE_BYTES, read_json

        config = read_json(os.path.join(home, "keras.json"), "keras.json",
                           max_bytes=MAX_STATE_BYTES)
        return config.get("backend", "tensorflow")
    except (ValueError, AttributeError):
        return "tensorflow"


def _below_level(line, level):
    if line.startswith(_ABSL_PREAMBLE) or _NO_GPU in line:
        # the absl preamble, and CUDA's "no GPU here" (logged as an error by every TensorFlow
        # start on a CPU-only machine): start-up notices, shown from level 1 down
        return level > _SEVERITY["W"]
    match = _LOG_LINE.match(line)
    return bool(match) and _SEVERITY[match.group(1) or match.group(2)] < level


def import_tensorflow_quietly():
    """Imports TensorFlow (on the TensorFlow backend) without its C++ start-up noise.

    ``TF_CPP_MIN_LOG_LEVEL`` defaults to "2"; a value already in the environment wins. The
    TensorFlow 2.21 start-up lines come from absl before it is initialised and ignore that
    variable, so stderr (file descriptor 2) is captured during the import and the lines whose
    severity is below the level are dropped; everything else is written back to stderr.
    """
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_TF_LOG_LEVEL)
    if "tensorflow" in sys.modules or _keras_backend() != "tensorflow":
        return
    try:
        level = int(level)
    except ValueError:
        level = 0
    if level <= 0:
        _try_import_tensorflow()
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            _try_import_tensorflow()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode("utf-8", errors="replace")
    kept = [line for line in text.splitlines(keepends=True) if not _below_level(line, level)]
    sys.stderr.write("".join(kept))
    sys.stderr.flush()


def _try_import_tensorflow():
    try:
        import tensorflow
    except ImportError:  # the command's own import then says what is missing
        return
    tensorflow.config.list_physical_devices()  # device start-up lines, inside the capture


# --------------------------------------------------------------------------- entry point
def parse_args(argv=None):
    """The parsed command line (``args.extra_args``: what a sub-command passes on, e.g. bench)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_extra_args", False):
        parser.error("unrecognized arguments: " + " ".join(extra))
    args.extra_args = extra
    return args


def main(argv=None):
    args = parse_args(argv)
    extra = args.extra_args
    if not {"-h", "--help"} & set(extra):  # a sub-command's own --help needs no TensorFlow
        import_tensorflow_quietly()
    try:
        return args.handler(args)
    except (ValueError, OSError) as err:  # bad input, an existing or unreadable path
        print(f"keras-mld {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
