"""One worker of the 2-process MultiWorkerMirroredStrategy test (tests/training/test_distribute.py).

Run with ``TF_CONFIG`` set; trains one epoch of the embedded digits with
``keras_mld.training.distribute.distributed_fit`` (SAM + EMA + ASL + mAP, validation) and
writes the final weights to ``--weights`` and ``{"chief": ..., "loss": ...}`` to ``--result``.
Usage: python multiworker_worker.py --data train.json --val-data val.json --out RUN_DIR
       --weights W.weights.h5 --result R.json
"""
import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def main():
    p = argparse.ArgumentParser()
    for name in ("--data", "--val-data", "--out", "--weights", "--result"):
        p.add_argument(name, required=True)
    p.add_argument("--global-batch-size", type=int, default=16)
    args = p.parse_args()

    from keras_mld.training import distribute
    strategy = distribute.make_strategy("multiworker")  # before any other TF op

    import keras
    import keras_mld
    from keras_mld import data as data_lib
    from keras_mld.app import workflows

    source = workflows.load_source(args.data)
    val_source = workflows.load_source(args.val_data, class_names=source.class_names)
    size = (32, 32)
    train_ds = data_lib.make_dataset(source, size, args.global_batch_size, training=True,
                                     seed=0, check_cache=False)
    val_ds = data_lib.make_dataset(val_source, size, args.global_batch_size,
                                   check_cache=False)

    def model_fn():
        keras.utils.set_random_seed(0)
        # no BatchNormalization: its moving statistics are per worker (not all-reduced),
        # so only a BN-free model ends with bit-identical *non-trainable* weights too
        from tests.support.tiny import tiny_backbone
        return keras_mld.build(tiny_backbone(), head="mldecoder",
                               num_classes=source.num_classes, input_shape=(32, 32, 3),
                               num_groups=5, embed_dim=16, num_heads=2, ff_dim=32,
                               dropout=0.0)

    recipe = {"epochs": 1, "lr": 1e-3, "schedule": "constant", "sam_rho": 0.05,
              "ema_momentum": 0.9, "jit_compile": False, "tensorboard": False,
              "early_stopping": None, "monitor": "val_mAP"}
    model, history = distribute.distributed_fit(model_fn, train_ds, val_ds, recipe,
                                                args.out, strategy=strategy, verbose=0)
    model.save_weights(args.weights)
    with open(args.result, "w") as f:
        json.dump({"chief": distribute.is_chief(strategy),
                   "replicas": strategy.num_replicas_in_sync,
                   "history": {k: [float(x) for x in v] for k, v in history.history.items()}},
                  f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
