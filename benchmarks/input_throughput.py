"""Input throughput of ``make_dataset``: a file list vs TFRecord shards (issue 22).

Writes ``--num-images`` JPEG files (real MNIST digit canvases from the embedded demo data,
upscaled to ``--source-size`` so that decoding costs what a photo's does), packs them into
``--num-shards`` shards, and times full passes of the training pipeline (decode + resize to
``--size``, shuffle, batch) for each, on ``--threads`` CPU threads (tf.data's private
thread pool), alternating the two sources. Prints images per second and per thread, and
the shards / file list ratio (median of the per-repetition ratios).

    python benchmarks/input_throughput.py --num-images 256 --size 448 --threads 1 --reps 3
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-images", type=int, default=256)
    p.add_argument("--source-size", type=int, default=640, help="side of the JPEG files")
    p.add_argument("--size", type=int, default=448, help="training input side")
    p.add_argument("--num-shards", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="tf.data private thread pool")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)

    import tensorflow as tf
    from PIL import Image

    from keras_mld.data import LabelledImages, load_coco, make_dataset, make_digits_dataset
    from keras_mld.data import pack_tfrecords

    root = tempfile.mkdtemp(prefix="input_throughput-")
    digits = make_digits_dataset(os.path.join(root, "digits"), num_train=args.num_images,
                                 num_val=8, image_size=64, seed=0)
    src = load_coco(digits.train_annotations)
    paths = []
    for i, path in enumerate(src.paths):
        out = os.path.join(root, "jpeg", f"{i:06d}.jpg")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        image = Image.open(path).convert("RGB").resize((args.source_size,) * 2, Image.BILINEAR)
        image.save(out, quality=90)
        paths.append(out)
    files = LabelledImages(paths, src.labels, src.class_names, src.task)
    shards = pack_tfrecords(files, os.path.join(root, "shards"), num_shards=args.num_shards)

    options = tf.data.Options()
    options.threading.private_threadpool_size = args.threads

    def one_pass(source):
        ds = make_dataset(source, args.size, args.batch_size, training=True, seed=0,
                          check="none", num_parallel_calls=args.threads).with_options(options)
        start = time.perf_counter()
        n = sum(int(x.shape[0]) for x, _ in ds)
        return n / (time.perf_counter() - start)

    one_pass(files), one_pass(shards)  # warm-up (file cache, tracing)
    rates = {"file list": [], "shards": []}
    for _ in range(args.reps):
        rates["file list"].append(one_pass(files))
        rates["shards"].append(one_pass(shards))
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"{name:10s} {med:8.1f} img/s  {med / args.threads:8.1f} img/s per thread  "
              f"(reps {', '.join(f'{v:.1f}' for v in r)})")
    ratio = statistics.median(b / a for a, b in zip(rates["file list"], rates["shards"]))
    print(f"shards / file list: {ratio:.3f}  ({args.num_images} JPEG {args.source_size} px -> "
          f"{args.size} px, {args.num_shards} shards, {args.threads} thread(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
