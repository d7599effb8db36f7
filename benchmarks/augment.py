"""Input-pipeline throughput: the papers' augmentation against the earlier one, per core.

    KERAS_BACKEND=tensorflow python benchmarks/augment.py [--size 448] [--images 64]
        [--reps 3] [--pipelines mldecoder,randaugment]

Times, on one core (TensorFlow intra-/inter-op threads = 1, tf.data private thread pool of
1, sequential ``map``), the training input pipeline decode JPEG -> resize (``--size``) ->
augment -> batch of 16, for each named augmentation of ``keras_mld.data.augment``
(``mldecoder``: CutoutPIL -> the ``randaugment`` package's policy, ML-Decoder's order;
``randaugment``: the earlier flip -> Keras RandAugment -> RandomErasing; ``none``: decode and
resize only). The JPEGs are ``--images`` 640 x 480 crops of scikit-image's sample
photographs (random pixels when scikit-image is missing), held in memory. Each repetition
runs every pipeline once, round-robin, after one untimed warm-up epoch; the result is the
median images/s over the repetitions, which is what one input worker (core) sustains: a
GPU doing ``G`` images/s needs about ``G / rate`` cores.
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _jpegs(n):
    import numpy as np
    import tensorflow as tf
    try:
        from skimage import data as skdata
        photos = [getattr(skdata, name)() for name in
                  ("astronaut", "chelsea", "coffee", "rocket")]
        photos = [p for p in photos if p.ndim == 3 and p.shape[2] == 3]
    except ImportError:
        photos = [np.random.default_rng(0).integers(0, 256, (600, 800, 3), np.uint8)]
    out = []
    for i in range(n):
        photo = tf.image.resize(photos[i % len(photos)], (480, 640))
        photo = tf.cast(tf.clip_by_value(photo, 0, 255), tf.uint8)
        out.append(tf.io.encode_jpeg(photo if i % 2 else photo[:, ::-1], quality=90).numpy())
    return out


def _dataset(jpegs, size, augment):
    import tensorflow as tf

    from keras_mld.data.augment import make_augmenter
    from keras_mld.data.image import decode_and_resize

    ds = tf.data.Dataset.from_tensor_slices(jpegs).map(lambda b: decode_and_resize(b, (size, size)))
    if augment != "none":
        apply = make_augmenter(augment, (size, size))
        seeds = tf.data.Dataset.random(seed=0).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(apply)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    return ds.batch(16).with_options(options)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--pipelines", default="mldecoder,randaugment,none")
    args = parser.parse_args(argv)

    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already running (called from another program)
        print("note: TensorFlow was already initialised; its thread pools are not pinned "
              "to one thread, the numbers are not per core")
    jpegs = _jpegs(args.images)
    names = args.pipelines.split(",")
    datasets = {name: _dataset(jpegs, args.size, name) for name in names}
    for ds in datasets.values():  # warm-up: tracing and graph optimisation
        for _ in ds:
            pass
    rates = {name: [] for name in names}
    for _ in range(args.reps):
        for name, ds in datasets.items():
            start = time.perf_counter()
            count = sum(int(x.shape[0]) for x in ds)
            rates[name].append(count / (time.perf_counter() - start))
    base = "randaugment" if "randaugment" in names else names[-1]  # the earlier pipeline
    print(f"{args.images} JPEGs 640x480 -> {args.size} px, batch 16, one core, "
          f"{args.reps} repetitions (median)")
    print("| pipeline | images/s per core | reps | ratio to " + base + " |")
    print("|---|---|---|---|")
    for name in names:
        med = statistics.median(rates[name])
        print(f"| {name} | {med:.1f} | {', '.join(f'{r:.1f}' for r in rates[name])} | "
              f"{med / statistics.median(rates[base]):.2f} |")


if __name__ == "__main__":
    main()
