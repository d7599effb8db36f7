"""Tiny training run used by test_resume.py: ``python resume_script.py RUN_DIR``.

Env ``HANG_AFTER_EPOCH=k``: after epoch index k has finished (and its backup is written),
write ``RUN_DIR/hanging`` and sleep, so that the test can SIGKILL the process.
"""
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_mld.training import fit  # noqa: E402


class Marker(keras.callbacks.Callback):
    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir

    def on_epoch_end(self, epoch, logs=None):
        with open(os.path.join(self.run_dir, "epochs.txt"), "a") as f:
            f.write(f"{epoch}\n")
            f.flush()
            os.fsync(f.fileno())
        if os.environ.get("HANG_AFTER_EPOCH") == str(epoch):
            open(os.path.join(self.run_dir, "hanging"), "w").close()
            time.sleep(300)


def main(run_dir):
    keras.utils.set_random_seed(0)
    rs = np.random.RandomState(0)
    x = rs.rand(48, 6).astype("float32")
    y = (x @ rs.randn(6, 3) > 0).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(8)
    val = tf.data.Dataset.from_tensor_slices((x[32:], y[32:])).batch(8)
    inp = keras.Input((6,))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Dense(8, activation="relu")(inp)))
    recipe = {"epochs": 3, "lr": 0.01, "optimizer": "adam", "weight_decay": 1e-4,
              "sam_rho": 0.05, "ema_momentum": 0.9, "schedule": "onecycle",
              "loss": {"name": "bce"}, "metrics": ["mAP"], "map_capacity": 64,
              "monitor": "val_ema_mAP", "early_stopping": {"patience": 5},
              "jit_compile": False}  # jit is covered by test_sam; keeps this run short
    hist = fit(model, train, val, recipe=recipe, run_dir=run_dir,
               callbacks=[Marker(run_dir)], verbose=0)
    print("RESULT " + json.dumps({"epochs": hist.epoch,
                                  "keys": sorted(hist.history),
                                  "iterations": int(hist.model.optimizer.iterations.numpy())}))


if __name__ == "__main__":
    main(sys.argv[1])
