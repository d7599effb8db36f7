"""The main job: ``keras-mld demo``.

Builds the embedded multi-label digits set (real MNIST digits on 64x64 canvases,
written as PNG + COCO json, read back through the real loader), trains a GAP model
and an ML-Decoder model with the same backbone, data, loss, optimizer and epoch
budget, and reports for each: mAP, CF1 and OF1 (at 0.5, at per-class thresholds tuned
on one half of the validation split and reported on the other half, and at top-3),
inference and training images/s. Saves a PR-curve PNG, a training-curve PNG (loss and the
exact validation mAP of every epoch) and ``report.json``, saves the trained ML-Decoder
classifier (tuned thresholds inside) as a preset folder ``preset/`` and exports it as a TF
Serving SavedModel.
"""
import os
import time

import keras
import numpy as np

from keras_mld.app.workflows import scores_of
from keras_mld.atomic import write_json
from keras_mld.metrics import mean_average_precision, multilabel_report, tune_thresholds
from keras_mld.models.builder import build
from keras_mld.recipes import load_recipe, model_arguments

# a run that checks the whole path in seconds (used by the test suite)
# --tiny: 96 steps (512 images x 6 epochs) at twice the recipe's peak lr: enough to learn
# clearly above chance (measured at seeds 0-2: 9-10 points over the chance row with GAP,
# 5-8 with ML-Decoder) in about 15 s of training per head on 2 CPU cores.
TINY = {"num_train": 512, "num_val": 64, "batch_size": 32, "epochs": 6, "lr": 4e-3}


def _datasets(out, cfg, seed):
    from keras_mld.data.coco import load_coco
    from keras_mld.data.digits import make_digits_dataset
    from keras_mld.data.pipeline import make_dataset

    built = make_digits_dataset(os.path.join(out, "data"), num_train=cfg["num_train"],
                                     num_val=cfg["num_val"], image_size=cfg["input_size"],
                                     seed=seed)
    train_src = load_coco(built.train_annotations)
    val_src = load_coco(built.val_annotations)
    size = (cfg["input_size"], cfg["input_size"])
    bs = cfg["batch_size"]
    train_ds = make_dataset(train_src, size, bs, training=True, augment=cfg["augment"],
                                 seed=seed, cache=True)
    val_ds = make_dataset(val_src, size, bs, cache=True)
    return train_src, val_src, train_ds, val_ds


def _throughput(model, dataset, repeats=3):
    """Median images/s of compiled inference over ``dataset`` (after one warm-up pass)."""
    batches = [images for images, _ in dataset]
    count = sum(int(b.shape[0]) for b in batches)
    model.predict_on_batch(batches[0])  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in batches:
            model.predict_on_batch(b)
        times.append(time.perf_counter() - start)
    return count / float(np.median(times))


def _evaluate(model, val_ds, class_names):
    y, p, _ = scores_of(model, val_ds)
    half = len(y) // 2
    thresholds = tune_thresholds(y[:half], p[:half])
    return {
        "at_0.5": multilabel_report(y, p, 0.5),
        "tuned_thresholds_on_second_half": multilabel_report(y[half:], p[half:],
                                                                     thresholds),
        "top_3": multilabel_report(y, p, top_k=3),
        "per_class_AP": dict(zip(class_names, map(float, mean_average_precision(
            y, p, return_per_class=True)[1]))),
    }, y, p, thresholds


def _plots(out, curves, histories):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    fig, ax = plt.subplots(figsize=(5, 4.5))
    for head, (y, p) in curves.items():
        precision, recall, _ = precision_recall_curve(y.ravel(), p.ravel())
        ax.plot(recall, precision, label=f"{head} (mAP {mean_average_precision(y, p):.3f})")
    ax.set(xlabel="recall (micro)", ylabel="precision (micro)", title="Validation PR curves",
           xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left")
    fig.tight_layout()
    pr_path = os.path.join(out, "pr_curves.png")
    fig.savefig(pr_path, dpi=110)
    plt.close(fig)

    fig, (ax, ax_map) = plt.subplots(1, 2, figsize=(10, 4.5))
    for head, hist in histories.items():
        epochs = np.arange(1, len(hist["loss"]) + 1)
        ax.plot(epochs, hist["loss"], "-o", label=f"{head} train loss")
        if "val_loss" in hist:
            ax.plot(epochs, hist["val_loss"], "--o", label=f"{head} val loss")
        if "val_mAP" in hist:
            ax_map.plot(epochs, 100 * np.asarray(hist["val_mAP"]), "-o", label=f"{head} val mAP")
    ax.set(xlabel="epoch", ylabel="ASL loss (sum over classes)", title="Training curves")
    ax.legend()
    ax_map.set(xlabel="epoch", ylabel="mAP (%)", title="Validation mAP (exact) per epoch")
    ax_map.legend()
    fig.tight_layout()
    curve_path = os.path.join(out, "training_curves.png")
    fig.savefig(curve_path, dpi=110)
    plt.close(fig)
    return pr_path, curve_path


def chance_map(y):
    """mAP of constant scores (every image scored alike): each class's AP is then its
    frequency among the validation images, so the chance level is the mean label frequency
    per class (computed with the same metric as the rows)."""
    y = np.asarray(y)
    return float(mean_average_precision(y, np.zeros(y.shape, "float32")))


def format_table(results, chance=None):
    """The demo's table as text (one row per head; then the chance row: mAP of constant
    scores, when ``chance`` is given)."""
    header = (f"{'head':<10} {'mAP':>6} {'CF1@.5':>7} {'OF1@.5':>7} {'CF1@thr':>8} "
              f"{'OF1@thr':>8} {'OF1@top3':>9} {'infer img/s':>12} {'train img/s':>12} "
              f"{'params':>9}")
    lines = [header, "-" * len(header)]
    for head, r in results.items():
        a, t, k = r["report"]["at_0.5"], r["report"]["tuned_thresholds_on_second_half"], \
            r["report"]["top_3"]
        lines.append(f"{head:<10} {100 * a['mAP']:6.2f} {100 * a['CF1']:7.2f} "
                     f"{100 * a['OF1']:7.2f} {100 * t['CF1']:8.2f} {100 * t['OF1']:8.2f} "
                     f"{100 * k['OF1']:9.2f} {r['inference_images_per_s']:12.1f} "
                     f"{r['train_images_per_s']:12.1f} {r['params']:9d}")
    if chance is not None:
        lines.append(f"{'chance':<10} {100 * chance:6.2f}   (mAP of constant scores = mean "
                     f"label frequency per class)")
    return "\n".join(lines)


def run_demo(out="runs/demo", recipe="demo", tiny=False, seed=0, export=True, verbose=2):
    """Runs the demo into ``out``; returns the report dict (also ``out/report.json``)."""
    from keras_mld.training.fit import fit

    recipe = load_recipe(recipe)
    cfg = {"input_size": int(recipe["model"]["input_size"]), **recipe["data"]}
    train_cfg = dict(recipe["train"])
    if tiny:
        cfg.update({k: v for k, v in TINY.items() if k not in ("epochs", "lr")})
        train_cfg.update(epochs=TINY["epochs"], lr=TINY["lr"])
    keras.utils.set_random_seed(seed)
    os.makedirs(out, exist_ok=True)
    train_src, val_src, train_ds, val_ds = _datasets(out, cfg, seed)
    class_names = list(train_src.class_names)
    size = cfg["input_size"]

    results, curves, histories, models = {}, {}, {}, {}
    for head in recipe["model"]["heads"]:
        keras.utils.set_random_seed(seed)
        model = build(**model_arguments(recipe, head=head, class_names=class_names))
        print(f"\n== training {head}: {model.count_params():,} parameters, "
              f"{train_cfg['epochs']} epochs ==", flush=True)
        start = time.perf_counter()
        history = fit(model, train_ds, val_ds, recipe=train_cfg,
                               run_dir=os.path.join(out, "runs", head), verbose=verbose)
        train_seconds = time.perf_counter() - start
        report, y, p, thresholds = _evaluate(model, val_ds, class_names)
        model.thresholds = np.clip(thresholds, 0.0, 1.0).tolist()  # they travel with the model
        results[head] = {
            "report": report,
            "thresholds": [float(t) for t in thresholds],
            "inference_images_per_s": _throughput(model, val_ds),
            "train_images_per_s": len(train_src.paths) * len(history.history["loss"])
            / train_seconds,
            "train_seconds": train_seconds,
            "params": int(model.count_params()),
        }
        curves[head] = (y, p)
        histories[head] = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        models[head] = model

    chance = chance_map(next(iter(curves.values()))[0]) if curves else None
    table = format_table(results, chance)
    print("\n" + table, flush=True)
    pr_path, curve_path = _plots(out, curves, histories)
    report = {"recipe": recipe["path"], "tiny": tiny, "seed": seed, "class_names": class_names,
              "num_train": len(train_src.paths), "num_val": len(val_src.paths),
              "backbone": recipe["model"]["backbone"], "input_size": size,
              "epochs": train_cfg["epochs"], "results": results, "histories": histories,
              "plots": [pr_path, curve_path], "table": table, "chance_mAP": chance}
    if "mldecoder" in models:
        head_recipe = {**recipe, "model": {**recipe["model"], "head": "mldecoder",
                                           "head_kwargs": recipe["model"]["heads"]["mldecoder"]},
                       "train": train_cfg}
        head_recipe["model"].pop("heads")
        report["preset"] = models["mldecoder"].save_to_preset(
            os.path.join(out, "preset"), recipe=head_recipe,
            validation=results["mldecoder"]["report"]["at_0.5"], overwrite=True)
        print(f"\nsaved the ML-Decoder classifier as a preset: {report['preset']}", flush=True)
    if export and "mldecoder" in models:
        from keras_mld.export import export_saved_model

        # class names, tuned thresholds, task and image size come from the model
        report["export"] = export_saved_model(models["mldecoder"], os.path.join(out, "export"),
                                              overwrite=False)
        print(f"\nexported ML-Decoder SavedModel: {report['export']}", flush=True)
    mld, gap = results.get("mldecoder"), results.get("gap")
    if mld and gap:
        ahead = mld["report"]["at_0.5"]["mAP"] > gap["report"]["at_0.5"]["mAP"]
        report["mldecoder_ahead_of_gap"] = bool(ahead)
        print(f"ML-Decoder {'ahead of' if ahead else 'NOT ahead of'} GAP on validation mAP "
              f"({100 * mld['report']['at_0.5']['mAP']:.2f} vs "
              f"{100 * gap['report']['at_0.5']['mAP']:.2f}).", flush=True)
    write_json(os.path.join(out, "report.json"), report)
    print(f"report: {os.path.join(out, 'report.json')}; plots: {pr_path}, {curve_path}",
          flush=True)
    return report
