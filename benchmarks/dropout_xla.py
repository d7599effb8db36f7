"""Dropout under XLA on a CPU: why ML-Decoder's training step misses its FLOP bound there.

    KERAS_BACKEND=tensorflow python benchmarks/dropout_xla.py

Times, with and without ``jit_compile``: a Keras ``Dropout`` on a [8, 100, 2048] tensor (the
size of ML-Decoder's feed-forward activations at batch 8), the random draw under it
(``tf.random.stateless_uniform``) with TensorFlow's default algorithm (``auto_select``) and
with ``philox``, and one ML-Decoder training step (forward + gradients, ResNet-50 features
[8, 7, 7, 2048], N = 100) with ``dropout=0.1`` and ``dropout=0``. Minimum of 5 calls each.
"""
import os
import sys
import time

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]


def main():
    import keras
    import tensorflow as tf

    from keras_mld.layers import MLDecoder
    from profile_head import train_step  # the same training step as profile_head.py --train

    calls = {}
    mask_shape = (8, 100, 2048)
    ones = tf.ones(mask_shape)
    seed = tf.constant([1, 2], tf.int64)
    drop = keras.layers.Dropout(0.1)
    feats = tf.constant(np.random.default_rng(0).uniform(size=(8, 7, 7, 2048)).astype("float32"))

    heads = {}
    for rate in (0.1, 0.0):
        x = keras.Input((7, 7, 2048))
        heads[rate] = keras.Model(x, MLDecoder(100, dropout=rate)(x))
    for jit in (False, True):
        fn = tf.function(lambda v: drop(v, training=True), jit_compile=jit)
        calls[f"keras Dropout(0.1) on {list(mask_shape)}", jit] = (fn, ones)
        for alg in ("auto_select", "philox"):
            fn = tf.function(lambda s, a=alg: tf.random.stateless_uniform(mask_shape, s, alg=a),
                             jit_compile=jit)
            calls[f"tf.random.stateless_uniform {list(mask_shape)}, alg={alg}", jit] = (fn, seed)
        for rate, model in heads.items():
            calls[f"ML-Decoder training step, dropout={rate}", jit] = (
                tf.function(train_step(model), jit_compile=jit), feats)
    times = {}
    for key, (fn, arg) in calls.items():
        np.asarray(fn(arg))  # trace + compile
        times[key] = []
    for _ in range(5):
        for key, (fn, arg) in calls.items():
            t0 = time.perf_counter()
            np.asarray(fn(arg))
            times[key].append(time.perf_counter() - t0)
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores; minimum of 5 calls\n")
    print("| what | ms without XLA | ms with XLA |")
    print("|---|---|---|")
    for name in dict.fromkeys(k[0] for k in calls):
        print(f"| {name} | {1e3 * min(times[name, False]):.1f} | "
              f"{1e3 * min(times[name, True]):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
