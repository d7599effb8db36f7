"""The jobs behind the ``keras-mld`` command: train from a recipe, evaluate, predict.

Each function does one job end to end and returns plain data; ``keras_mld.cli`` only
parses arguments and prints.
"""
import json
import os
import time

import keras
import numpy as np

from keras_mld import builders, metrics
from keras_mld.recipes import load_recipe

LABELS_FILE = "labels.json"


def load_source(path, class_names=None):
    """A labelled image source from a path: COCO ``.json``, ``.csv`` or an image-folder root."""
    from keras_mld import data

    path = os.fspath(path)
    if os.path.isdir(path):
        return data.load_image_folder(path, class_names=class_names)
    if path.endswith(".json"):
        return data.load_coco(path)
    if path.endswith(".csv"):
        return data.load_csv(path, class_names=class_names)
    raise ValueError(f"data: expected a COCO .json, a .csv or an image folder, got {path!r}")


def _model_kwargs(recipe, source, overrides):
    m = {**recipe["model"], **{k: v for k, v in overrides.items() if v is not None}}
    size = int(m.get("input_size", 224))
    return dict(backbone=m.get("backbone", "efficientnetv2_s"), head=m.get("head", "mldecoder"),
                num_classes=source.num_classes, input_shape=(size, size, 3),
                weights=m.get("weights"), task=source.task, **m.get("head_kwargs", {}))


def train(recipe, data, out, val_data=None, backbone=None, head=None, epochs=None,
          batch_size=None, seed=0, verbose="auto", strategy="default", lr_scaling="none"):
    """Trains the recipe's model on ``data`` (validating on ``val_data``) into ``out``.

    Writes ``out/labels.json`` (class names and task) beside the fit recipe's files
    (``best.keras``, ``final.keras``, ``log.csv``, ``backup/``...). Returns the History.
    ``strategy``: a name of :data:`keras_mld.training.distribute.STRATEGIES` or a
    ``tf.distribute.Strategy``; ``batch_size`` is global (all replicas); ``lr_scaling``
    (``none``/``linear``/``sqrt``) scales the recipe's lr from its reference batch
    (``data.reference_batch_size``, else ``data.batch_size``). See the README section "Distributed and extreme-scale training".
    """
    from keras_mld import data as data_lib
    from keras_mld import training
    from keras_mld.training import distribute

    # the strategy first: MultiWorkerMirroredStrategy must exist before any other TF op
    if isinstance(strategy, str):
        strategy = distribute.make_strategy(strategy)
    recipe = load_recipe(recipe) if not isinstance(recipe, dict) else recipe
    source = load_source(data)
    val_source = load_source(val_data, class_names=source.class_names) if val_data else None
    if val_source is not None and list(val_source.class_names) != list(source.class_names):
        raise ValueError("val_data: its classes differ from the training data's classes")
    kwargs = _model_kwargs(recipe, source, {"backbone": backbone, "head": head})
    bs = int(batch_size or recipe["data"].get("batch_size", 32))
    distribute.per_replica_batch_size(bs, strategy)
    size = kwargs["input_shape"][:2]
    train_ds = data_lib.make_dataset(source, size, bs, training=True,
                                     augment=recipe["data"].get("augment"), seed=seed)
    val_ds = (data_lib.make_dataset(val_source, size, bs) if val_source is not None else None)
    train_recipe = dict(recipe["train"])
    if epochs is not None:
        train_recipe["epochs"] = int(epochs)
    if source.task == "singlelabel" and train_recipe.get("loss", {}).get("name") == "asl":
        train_recipe["loss"] = {"name": "asl_single"}
    if val_ds is None:
        train_recipe["monitor"] = "loss"
    train_recipe["lr"] = distribute.scale_learning_rate(
        train_recipe.get("lr", training.DEFAULT_RECIPE["lr"]), bs,
        distribute.reference_batch_size(recipe) or bs, lr_scaling)
    if distribute.is_chief(strategy):
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, LABELS_FILE), "w", encoding="utf-8") as f:
            json.dump({"labels": list(source.class_names), "task": source.task}, f, indent=1)
    return distribute.distributed_fit(lambda: builders.build(**kwargs), train_ds, val_ds,
                                      recipe=train_recipe, run_dir=out, strategy=strategy,
                                      verbose=verbose)[1]


def load_labels(model_path, labels=None):
    """Class names for a ``.keras`` model: ``labels`` (a file or list) or ``labels.json`` beside it."""
    if labels is None:
        labels = os.path.join(os.path.dirname(os.path.abspath(model_path)), LABELS_FILE)
        if not os.path.exists(labels):
            raise ValueError(f"labels: no {LABELS_FILE} beside {model_path}; pass --labels")
    if isinstance(labels, (list, tuple)):
        return list(labels)
    with open(labels, encoding="utf-8") as f:
        if labels.endswith(".json"):
            obj = json.load(f)
            return list(obj["labels"] if isinstance(obj, dict) else obj)
        return [line.strip() for line in f if line.strip()]


def probabilities(model, logits):
    """Softmax for single-label models (last layer ``singlelabel_logits``), else sigmoid."""
    if model.layers[-1].name == "singlelabel_logits":
        return np.asarray(keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1)))
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.sigmoid(logits)))


def scores_of(model, dataset):
    """``(y_true, probabilities, seconds)`` of ``model`` over a batched ``(images, labels)`` dataset."""
    ys, ps = [], []
    start = time.perf_counter()
    for images, labels in dataset:
        logits = model(images, training=False)
        ps.append(probabilities(model, logits))
        ys.append(np.asarray(labels))
    return np.concatenate(ys), np.concatenate(ps), time.perf_counter() - start


def evaluate(model_path, data, batch_size=32, thresholds=None):
    """Multi-label report of a saved ``.keras`` model on ``data`` (0.5, per-class, top-3)."""
    from keras_mld import data as data_lib

    model = keras.models.load_model(model_path, safe_mode=True)
    source = load_source(data, class_names=load_labels(model_path))
    size = tuple(model.input_shape[1:3])
    y, p, _ = scores_of(model, data_lib.make_dataset(source, size, batch_size))
    return {"at_0.5": metrics.multilabel_report(y, p, 0.5),
            "at_tuned": metrics.multilabel_report(y, p, thresholds) if thresholds is not None
            else None,
            "top_3": metrics.multilabel_report(y, p, top_k=3)}


def predict(model_path, images, labels=None, top_k=5, threshold=0.5):
    """``[(path, [(label, score), ...])]``: labels above ``threshold`` (at least the top one)."""
    from keras_mld.data.image import decode_and_resize
    import tensorflow as tf

    model = keras.models.load_model(model_path, safe_mode=True)
    names = load_labels(model_path, labels)
    size = tuple(model.input_shape[1:3])
    if None in size:
        raise ValueError(f"model: {model_path} has no static input size to resize images to")
    out = []
    for path in images:
        if not os.path.isfile(path):
            raise ValueError(f"images: no such file {path!r}")
        try:  # bounded: an image over DEFAULT_MAX_IMAGE_PIXELS is refused from its header
            x = decode_and_resize(tf.io.read_file(path), size)[None]
        except tf.errors.InvalidArgumentError as e:
            raise ValueError(f"images: cannot use {path!r}: {e.message.strip()}") from None
        scores = probabilities(model, model(x, training=False))[0]
        order = np.argsort(-scores)[:top_k]
        picked = [(names[i], float(scores[i])) for i in order if scores[i] >= threshold]
        out.append((path, picked or [(names[order[0]], float(scores[order[0]]))]))
    return out
