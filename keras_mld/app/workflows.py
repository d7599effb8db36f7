"""The jobs behind the ``keras-mld`` command: train from a recipe, evaluate, predict,
convert.

Each function does one job end to end and returns plain data; :mod:`keras_mld.app.cli`
only parses arguments and prints.
"""
import os
import time

import keras
import numpy as np

from keras_mld.atomic import save_model
from keras_mld.metrics.report import multilabel_report
from keras_mld.models.builder import build
from keras_mld.models.image_classifier import ImageClassifier
from keras_mld.recipes import load_recipe, model_arguments


def load_source(path, class_names=None):
    """A labelled image source from a path: COCO ``.json``, ``.csv``, a folder of TFRecord
    shards (``keras-mld data pack``; its classes must then equal ``class_names``) or an
    image-folder root."""
    from keras_mld.data.coco import load_coco
    from keras_mld.data.csv import load_csv
    from keras_mld.data.folders import load_image_folder
    from keras_mld.data.tfrecords import SIDECAR, load_tfrecords

    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, SIDECAR)):
        source = load_tfrecords(path)
        if class_names is not None and list(source.class_names) != list(class_names):
            raise ValueError(f"data: the classes of {path!r} differ from {list(class_names)}")
        return source
    if os.path.isdir(path):
        return load_image_folder(path, class_names=class_names)
    if path.endswith(".json"):
        return load_coco(path)
    if path.endswith(".csv"):
        return load_csv(path, class_names=class_names)
    raise ValueError(f"data: expected a COCO .json, a .csv or an image folder, got {path!r}")


def train(recipe, data, out, val_data=None, backbone=None, head=None, epochs=None,
          batch_size=None, seed=0, verbose="auto", strategy="default", lr_scaling="none",
          word_vectors=None):
    """Trains the recipe's model on ``data`` (validating on ``val_data``) into ``out``.

    Writes the fit recipe's files (``best.keras``, ``final.keras``, ``log.csv``,
    ``backup/``...); the saved models carry the data's class names and task. Returns the
    History.
    ``seed`` seeds the initial weights (``keras.utils.set_random_seed``), the shuffling
    and the augmentation: the same seed and global batch give the same model on one device
    and on several workers (dropout draws its masks per replica, so only a model without
    dropout is reproduced to float rounding). ``strategy``: a name of :data:`keras_mld.training.distribute.STRATEGIES` or a
    ``tf.distribute.Strategy``; ``batch_size`` is global (all replicas); ``lr_scaling``
    (``none``/``linear``/``sqrt``) scales the recipe's lr from its reference batch
    (``data.reference_batch_size``, else ``data.batch_size``). See the README section "Distributed and extreme-scale training".
    ``data.label_mask`` (C-Tran's label-mask training, the ``ctran`` head only): ``{}`` or
    ``{max_known_fraction: f}``; the model gets its ``known_labels`` input and the
    training data :func:`keras_mld.data.ctran_label_mask_dataset` (the validation data:
    every label unknown).
    ``word_vectors``: the label word vectors of a zero-shot recipe (``query_type: word``,
    e.g. ``mldecoder_nus_zsl``): a GloVe / word2vec text file or ``glove-6b-50d``; default
    the recipe's ``model.word_vectors``. The model is built under the recipe's
    ``mixed_precision`` (:func:`keras_mld.training.mixed_precision_scope`).
    """
    from keras_mld.data.pipeline import make_dataset
    from keras_mld.training import distribute
    from keras_mld.training.fit import DEFAULT_RECIPE
    from keras_mld.training.precision import mixed_precision_scope

    # the strategy first: MultiWorkerMirroredStrategy must exist before any other TF op
    if isinstance(strategy, str):
        strategy = distribute.make_strategy(strategy)
    # --seed fixes the model's initial weights (and, through TensorFlow's global seed, the
    # pipeline's op seeds): one process and every worker of a cluster start alike
    keras.utils.set_random_seed(int(seed))
    recipe = load_recipe(recipe) if not isinstance(recipe, dict) else recipe
    source = load_source(data)
    val_source = load_source(val_data, class_names=source.class_names) if val_data else None
    if val_source is not None and list(val_source.class_names) != list(source.class_names):
        raise ValueError("val_data: its classes differ from the training data's classes")
    chosen = {k: v for k, v in {"backbone": backbone, "head": head}.items() if v is not None}
    if word_vectors is not None:
        chosen["word_vectors"] = word_vectors
    kwargs = model_arguments(recipe, class_names=list(source.class_names), task=source.task,
                             **chosen)
    if kwargs.get("query_type") == "word" and kwargs.get("label_vectors") is None:
        raise ValueError(f"word_vectors: recipe {recipe.get('name')!r} trains word queries "
                         "(zero-shot ML-Decoder); pass word vectors for the class names "
                         "(--word-vectors FILE: a GloVe / word2vec text file, or glove-6b-50d)")
    bs = int(batch_size or recipe["data"].get("batch_size", 32))
    distribute.per_replica_batch_size(bs, strategy)
    size = kwargs["input_shape"][:2]
    train_ds = make_dataset(source, size, bs, training=True,
                                     augment=recipe["data"].get("augment"), seed=seed)
    val_ds = (make_dataset(val_source, size, bs) if val_source is not None else None)
    label_mask = recipe["data"].get("label_mask")
    if label_mask is not None:
        train_ds, val_ds = _label_mask_data(label_mask, kwargs, train_ds, val_ds, seed)
    train_recipe = dict(recipe["train"])
    if epochs is not None:
        train_recipe["epochs"] = int(epochs)
    if source.task == "singlelabel" and train_recipe.get("loss", {}).get("name") == "asl":
        train_recipe["loss"] = {"name": "asl_single"}
    if val_ds is None:
        train_recipe["monitor"] = "loss"
    train_recipe["lr"] = distribute.scale_learning_rate(
        train_recipe.get("lr", DEFAULT_RECIPE["lr"]), bs,
        distribute.reference_batch_size(recipe) or bs, lr_scaling)

    def model_fn():
        with mixed_precision_scope(train_recipe):
            return build(**kwargs)

    return distribute.distributed_fit(model_fn, train_ds, val_ds,
                                      recipe=train_recipe, run_dir=out, strategy=strategy,
                                      verbose=verbose)[1]


def _label_mask_data(options, kwargs, train_ds, val_ds, seed):
    """C-Tran label-mask training: ``known_labels`` input, masked training data."""
    from keras_mld.data.label_mask import ctran_label_mask_dataset
    from keras_mld.metadata import IMAGES_INPUT, KNOWN_LABELS_INPUT

    if not isinstance(options, dict) or set(options) - {"max_known_fraction"}:
        raise ValueError(f"recipe: data.label_mask must be a mapping with at most "
                         f"'max_known_fraction', got {options!r}")
    if kwargs["head"] != "ctran":
        raise ValueError(f"recipe: data.label_mask needs the 'ctran' head, got "
                         f"{kwargs['head']!r}")
    kwargs["known_labels_input"] = True

    def named(inputs, targets):
        return {IMAGES_INPUT: inputs[0], KNOWN_LABELS_INPUT: inputs[1]}, targets

    train_ds = ctran_label_mask_dataset(train_ds, seed=seed, **options).map(named)
    if val_ds is not None:  # the official validation: every label unknown
        val_ds = ctran_label_mask_dataset(val_ds, seed=seed, num_known=0,
                                          rerandomize_each_iteration=False).map(named)
    return train_ds, val_ds


def pack(data, out, num_shards=8, overwrite=False):
    """``keras-mld data pack``: the dataset at ``data`` (COCO ``.json``, ``.csv``, image
    folder) written as TFRecord shards into ``out``; returns the
    :class:`keras_mld.data.TFRecordSource`."""
    from keras_mld.data.tfrecords import pack_tfrecords

    return pack_tfrecords(load_source(data), out, num_shards=num_shards, overwrite=overwrite)


def load_classifier(path):
    """A :class:`keras_mld.ImageClassifier` from a ``.keras`` file or a preset folder."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return ImageClassifier.from_preset(path)
    if not os.path.isfile(path):
        raise ValueError(f"model: no such file or folder {path!r} (expected a .keras file, a "
                         "preset folder or a SavedModel directory)")
    model = keras.models.load_model(path, safe_mode=True)
    if not isinstance(model, ImageClassifier):
        raise ValueError(f"model: {path} holds a {type(model).__name__}, not a "
                         "keras_mld.ImageClassifier (which carries its class names); rebuild it "
                         "with keras_mld.build and load its weights")
    return model


def _unknown_labels_feed(model, images):
    """The model's inputs for ``images``: with C-Tran's ``known_labels`` input, every label
    unknown (-1), as at inference."""
    from keras_mld.metadata import IMAGES_INPUT, KNOWN_LABELS_INPUT

    if not isinstance(model.input, dict):
        return images
    extra = {t.name for t in model.inputs} - {IMAGES_INPUT, KNOWN_LABELS_INPUT}
    if extra:
        raise ValueError(f"model: it also needs the inputs {sorted(extra)}")
    unknown = -np.ones((int(images.shape[0]), model.num_classes), "float32")
    return {IMAGES_INPUT: np.asarray(images), KNOWN_LABELS_INPUT: unknown}


def scores_of(model, dataset):
    """``(y_true, probabilities, seconds)`` of ``model`` over a batched ``(images, labels)`` dataset."""
    ys, ps = [], []
    start = time.perf_counter()
    for images, labels in dataset:
        ps.append(model.scores(model(_unknown_labels_feed(model, images), training=False)))
        ys.append(np.asarray(labels))
    return np.concatenate(ys), np.concatenate(ps), time.perf_counter() - start


def evaluate(model_path, data, batch_size=32, thresholds=None):
    """Multi-label report of a saved ``.keras`` model on ``data`` (0.5, per-class, top-3)."""
    from keras_mld.data.pipeline import make_dataset

    model = load_classifier(model_path)
    source = load_source(data, class_names=model.class_names)
    size = model.image_size
    y, p, _ = scores_of(model, make_dataset(source, size, batch_size))
    return {"at_0.5": multilabel_report(y, p, 0.5),
            "at_tuned": multilabel_report(y, p, thresholds) if thresholds is not None
            else None,
            "top_3": multilabel_report(y, p, top_k=3)}


def _saved_model_dir(path):
    """The SavedModel version directory of ``path`` (itself, or its newest numeric version)."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted(int(d) for d in os.listdir(path) if d.isdigit()
                      and os.path.isfile(os.path.join(path, d, "saved_model.pb")))
    return os.path.join(path, str(versions[-1])) if versions else None


def predict(model_path, images, top_k=5, threshold=None):
    """``[(path, [(label, score), ...])]`` for image files: the labels at or above their
    class threshold (the model's, or ``threshold`` for every class), at least the top one.

    ``model_path``: a ``.keras`` file or a preset folder (a
    :class:`keras_mld.ImageClassifier`), or an exported SavedModel (version directory, or
    base directory: its newest version), read through its ``predict_images`` signature.
    """
    for path in images:
        if not os.path.isfile(path):
            raise ValueError(f"images: no such file {path!r}")
    model_path = os.fspath(model_path)
    served = _saved_model_dir(model_path) if os.path.isdir(model_path) else None
    if served is not None:
        results = _predict_served(served, images, threshold)
    else:
        model = load_classifier(model_path)
        results = [(r["labels"], r["top_k"]) for r in model.predict_labels(
            list(images), top_k=top_k, thresholds=threshold)]
    out = []
    for path, (picked, top) in zip(images, results):
        out.append((path, (picked or top[:1])[:max(top_k, len(picked))]))
    return out


SERVED_CHUNK = 32  # images per request to an exported SavedModel in `keras-mld predict`


def _predict_served(export_dir, images, threshold):
    import tensorflow as tf

    loaded = tf.saved_model.load(export_dir)
    if "predict_images" not in loaded.signatures:
        raise ValueError(f"model: {export_dir} has no predict_images signature")
    fn = loaded.signatures["predict_images"]
    if "labels" not in fn.structured_outputs:
        raise ValueError(f"model: {export_dir} is a zero-shot export; pass label names")

    def request(paths):
        data = tf.constant([tf.io.read_file(p).numpy() for p in paths])
        return {k: v.numpy() for k, v in fn(image_bytes=data).items()}

    # small requests (memory bounded for a long file list, under the export's
    # max_batch_size); a refused request is retried image by image to name the bad file
    parts = []
    for start in range(0, len(images), SERVED_CHUNK):
        chunk = images[start:start + SERVED_CHUNK]
        try:
            parts.append(request(chunk))
        except tf.errors.InvalidArgumentError:
            for path in chunk:
                try:
                    parts.append(request([path]))
                except tf.errors.InvalidArgumentError as err:
                    raise ValueError(f"images: cannot use {path!r}: "
                                     f"{err.message.strip()}") from None
    res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    names = [n.decode("utf-8") for n in loaded.signatures["metadata"]()["labels"].numpy()]
    out = []
    for i in range(len(images)):
        scores = res["scores"][i]
        top = [(n.decode("utf-8"), float(s)) for n, s in
               zip(res["top_k_labels"][i], res["top_k_scores"][i])]
        if threshold is None:
            picked = [(n.decode("utf-8"), float(scores[names.index(n.decode("utf-8"))]))
                      for n in res["labels"][i][:res["num_labels"][i]]]
        else:
            order = np.argsort(-scores, kind="stable")
            picked = [(names[j], float(scores[j])) for j in order if scores[j] >= threshold]
        out.append((picked, top))
    return out


def convert(source, out, image_size=224, num_heads=8, overwrite=False):
    """``keras-mld convert``: a checkpoint -> a preset folder or a ``.keras`` file.

    An official ML-Decoder checkpoint gives the :class:`~keras_mld.ImageClassifier` (input
    RGB [0, 255], class names inside): ``out`` a folder -> a preset
    (:meth:`~keras_mld.ImageClassifier.save_to_preset`, which ``keras-mld predict --model``,
    ``keras-mld export --model`` and ``ImageClassifier.from_preset`` read); ``out`` ending in
    ``.keras`` -> one Keras file. A timm / official TResNet state dict without ML-Decoder head
    gives the TResNet backbone (input RGB in [0, 1]; with its GAP + fc classifier when the
    state dict has ``head.fc``) as ``out`` (``.keras``) or ``out/model.keras``.

    Everything is written aside and renamed into place. Returns the path written.
    """
    from keras_mld.checkpoints.reader import read_checkpoint
    from keras_mld.models.ml_decoder.convert import PREFIX, convert_ml_decoder_checkpoint
    from keras_mld.models.tresnet.convert import convert_tresnet, infer_config, to_timm_layout

    out = os.fspath(out)
    if not out.endswith(".keras") and os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out: {out!r} exists and is not a folder (give a folder or a .keras path)")
    state, meta = read_checkpoint(source)
    if any(k.startswith(PREFIX) for k in state):
        model, _ = convert_ml_decoder_checkpoint({**state, **meta}, image_size=image_size,
                                                 num_heads=num_heads)
        if not out.endswith(".keras"):
            return model.save_to_preset(out, overwrite=overwrite)
        model_path = out
    else:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        cfg = infer_config(to_timm_layout(state))
        model = convert_tresnet(state, input_shape=size + (3,),
                                include_top=cfg["num_classes"] is not None)
        model_path = out if out.endswith(".keras") else os.path.join(out, "model.keras")
    if os.path.exists(model_path) and not overwrite:  # fail before saving; the rename refuses too
        raise ValueError(f"out: {model_path!r} exists; pass overwrite=True (--overwrite) to "
                         "replace it")
    try:
        return save_model(model, model_path, overwrite=overwrite, caller="convert")
    except FileExistsError as err:
        raise ValueError(f"out: {err}") from None
