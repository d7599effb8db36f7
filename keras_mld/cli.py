"""``keras-mld`` command: argparse front end over :mod:`keras_mld.workflows`, ``demo``,
``export`` and the benchmarks. No logic of its own."""
import argparse
import json
import os
import sys


def _parser():
    p = argparse.ArgumentParser(prog="keras-mld", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="train GAP and ML-Decoder on the embedded digits, report, export")
    d.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    d.add_argument("--recipe", default="demo", help="recipe name or path (default demo)")
    d.add_argument("--tiny", action="store_true", help="a seconds-long run of the whole path")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-export", action="store_true")
    d.add_argument("--zsl", action="store_true", help="the zero-shot demo (seen/unseen digits)")

    t = sub.add_parser("train", help="train a recipe on a dataset")
    t.add_argument("--recipe", required=True, help="zoo recipe name or YAML path")
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

    e = sub.add_parser("evaluate", help="multi-label report of a .keras model on a dataset")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--batch-size", type=int, default=32)

    x = sub.add_parser("export", help="export a .keras model: TF Serving SavedModel, ONNX or "
                                      "OpenVINO IR")
    x.add_argument("--model", required=True)
    x.add_argument("--format", default="savedmodel", choices=("savedmodel", "onnx", "openvino"))
    x.add_argument("--out", required=True,
                   help="savedmodel: base directory (versions go below it); onnx: the .onnx "
                        "file; openvino: the directory for model.xml/model.bin")
    x.add_argument("--labels", help="labels .txt/.json (default: labels.json beside the model)")
    x.add_argument("--thresholds", help="JSON list of per-class thresholds, or one float")
    x.add_argument("--version", type=int, help="savedmodel only")
    x.add_argument("--overwrite", action="store_true")
    x.add_argument("--max-image-pixels", type=int, default=40_000_000,
                   help="savedmodel: predict_images refuses larger images (default 40,000,000)")
    x.add_argument("--max-batch-size", type=int, default=256,
                   help="savedmodel: predict_images refuses larger requests (default 256)")

    r = sub.add_parser("predict", help="labels and scores for image files")
    r.add_argument("images", nargs="+")
    r.add_argument("--model", required=True, help=".keras model (labels.json beside it)")
    r.add_argument("--labels")
    r.add_argument("--top-k", type=int, default=5)
    r.add_argument("--threshold", type=float, default=0.5)

    b = sub.add_parser("bench", help="head benchmarks (see benchmarks/heads.py --help)")
    b.add_argument("args", nargs=argparse.REMAINDER)
    return p


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except ValueError as err:
        print(f"keras-mld {args.command}: error: {err}", file=sys.stderr)
        return 2


def _run(args):
    if args.command == "demo":
        if args.zsl:
            from keras_mld.zsl.demo import run_zsl_demo
            run_zsl_demo(out=args.out, tiny=args.tiny, seed=args.seed)
            return 0
        from keras_mld.demo import run_demo
        run_demo(out=args.out, recipe=args.recipe, tiny=args.tiny, seed=args.seed,
                 export=not args.no_export)
        return 0
    from keras_mld import workflows
    if args.command == "train":
        workflows.train(args.recipe, args.data, args.out, val_data=args.val_data,
                        backbone=args.backbone, head=args.head, epochs=args.epochs,
                        batch_size=args.batch_size, seed=args.seed,
                        strategy=args.strategy, lr_scaling=args.lr_scaling)
        return 0
    if args.command == "evaluate":
        print(json.dumps(workflows.evaluate(args.model, args.data, args.batch_size), indent=1))
        return 0
    if args.command == "predict":
        for path, picked in workflows.predict(args.model, args.images, args.labels, args.top_k,
                                              args.threshold):
            print(path + ": " + ", ".join(f"{name} {score:.3f}" for name, score in picked))
        return 0
    if args.command == "export":
        import keras
        from keras_mld import export
        model = keras.models.load_model(args.model, safe_mode=True)
        thresholds = json.loads(args.thresholds) if args.thresholds else None
        labels = workflows.load_labels(args.model, args.labels)
        if args.format == "savedmodel":
            path = export.export_saved_model(model, args.out, labels, thresholds=thresholds,
                                             version=args.version, overwrite=args.overwrite,
                                             max_image_pixels=args.max_image_pixels,
                                             max_batch_size=args.max_batch_size)
        else:
            if args.version is not None:
                raise ValueError("--version: only for --format savedmodel")
            fn = export.export_onnx if args.format == "onnx" else export.export_openvino
            path = fn(model, args.out, labels, thresholds=thresholds, overwrite=args.overwrite)
        print(path)
        return 0
    if args.command == "bench":
        from keras_mld.bench import main as bench_main
        return bench_main(args.args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
