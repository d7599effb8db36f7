"""TF Serving SavedModel export (see docs/serving.md).

``export_saved_model`` writes ``base_dir/<version>/`` atomically: everything goes to a
hidden ``base_dir/.tmp-<version>-<random>`` (TF Serving only loads numeric directory
names) that is renamed into place once complete, so a serving process never sees a
half-written version. The graph is plain TensorFlow (``tf.Module`` + ``tf.function``,
the Keras model's call traced into it) and loads with ``import tensorflow`` alone.

Signatures (all batch-major, ``B`` may be 0):

- ``serving_default``: ``images`` float32 ``[B, H, W, 3]`` RGB in [0, 255]
  -> ``scores`` float32 ``[B, N]`` (sigmoid, or softmax for single-label models).
- ``predict_images``: ``image_bytes`` string ``[B]`` (encoded JPEG/PNG/GIF/BMP, formats may be
  mixed) decoded and resized with ``keras_mld.data.image.decode_and_resize`` (as in
  training) -> ``scores`` ``[B, N]``; ``labels`` string ``[B, N]``: the names whose score is
  ``>=`` their class threshold, highest score first, padded with ``""``; ``num_labels``
  int32 ``[B]`` (non-empty entries of each ``labels`` row); ``top_k_labels`` string
  ``[B, k]`` and ``top_k_scores`` float32 ``[B, k]`` (``k = min(top_k, N)``, best first).
- ``metadata`` (no inputs): ``labels`` ``[N]``, ``thresholds`` ``[N]``, ``task``, ``image_size``
  ``[2]``, ``top_k``.

``predict_images`` is bounded (also WebP accepted): each image's width and height are read
from its header before decoding (``keras_mld.data.image.image_shape_from_header``); an
image over ``max_image_pixels`` or a request of more than ``max_batch_size`` images fails
with ``INVALID_ARGUMENT`` naming the limit.

Class names and thresholds also travel as ``tf.Variable`` s (``loaded.labels``,
``loaded.thresholds``) and as assets ``labels.txt`` and ``keras_mld.json``.
"""
import json
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_mld.atomic import atomic_path, write_text
from keras_mld.data.image import (
    DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_REQUEST_BYTES, decode_batch)
from keras_mld.export.arguments import (arg_error, check_image_size, check_labels, check_limit,
                                        check_thresholds, check_version, count_classes,
                                        detect_task, images_input, numeric_versions)
from keras_mld.export.warmup import (WARMUP_DIR, WARMUP_FILENAME, serving_apis,
                                     write_warmup_requests)
from keras_mld.metadata import scores_from_logits
from keras_mld.models.graph.freeze import freeze_graph_branches

SIGNATURES = ("serving_default", "predict_images", "metadata")
MODELS_CONFIG = "models.config"


# ----------------------------------------------------------------------------- the graph
def logits_function(model, images, num_classes):
    """``images [B,H,W,3] float32`` -> float32 logits; other inputs get their inference value."""
    if len(model.inputs) == 1:
        return lambda images: model(images, training=False)
    dict_input = isinstance(model.input, dict)
    keys = {t.name: k for k, t in model.input.items()} if dict_input else None

    def call(pixels):
        feeds = {}
        for t in model.inputs:
            if t is images:
                value = pixels
            else:  # known_labels: every label unknown (-1), C-Tran (arXiv:2011.14027)
                value = tf.fill([tf.shape(pixels)[0], num_classes],
                                tf.constant(-1, dtype=t.dtype))
            feeds[keys[t.name] if dict_input else t.name] = value
        return model(feeds, training=False)

    return call


def _serving_module(model, labels, thresholds, assets):
    """What is saved: the model's variables, class names, thresholds and assets."""
    module = tf.Module(name="keras_mld_serving")
    # Tracked so that tf.saved_model.save writes them (as keras' ExportArchive does).
    module.model_variables = list(model.variables)
    module.labels = tf.Variable(labels, dtype=tf.string, trainable=False, name="labels")
    module.thresholds = tf.Variable(thresholds, dtype=tf.float32, trainable=False,
                                    name="thresholds")
    module.labels_file = tf.saved_model.Asset(assets["labels.txt"])
    module.metadata_file = tf.saved_model.Asset(assets["keras_mld.json"])
    return module


def _signature_functions(module, model, task, image_size, top_k,
                         max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
                         max_batch_size=DEFAULT_MAX_BATCH_SIZE,
                         max_request_bytes=DEFAULT_MAX_REQUEST_BYTES):
    """``{name: tf.function}``: closures over the Keras model (whose call is traced in).

    They are not attributes of ``module``: tf.saved_model.save would trace them once more
    (slow for big heads); they are saved once, as signatures (``loaded.signatures[name]``).
    """
    num_classes = int(module.labels.shape[0])
    logits_fn = logits_function(model, images_input(model), num_classes)
    height, width = image_size
    k = min(top_k, num_classes)
    images_spec = tf.TensorSpec([None, height, width, 3], tf.float32, name="images")

    # One trace of the Keras model, called by both image signatures.
    @tf.function(input_signature=[images_spec], autograph=False)
    def scores_fn(images):
        def run():
            return scores_from_logits(logits_fn(images), task)

        # an empty request answers [0, N] without running the model: TensorFlow's oneDNN
        # batch-norm kernel fails on an empty batch on some CPUs ("Incompatible shapes")
        return tf.cond(tf.shape(images)[0] > 0, run,
                       lambda: tf.zeros([0, num_classes], tf.float32))

    def decode(image_bytes):
        return decode_batch(image_bytes, (height, width), max_image_pixels, max_batch_size,
                            max_request_bytes)

    @tf.function(input_signature=[images_spec], autograph=False)
    def serving_default(images):
        return {"scores": scores_fn(images)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
                 autograph=False)
    def predict_images(image_bytes):
        scores = scores_fn(decode(image_bytes))
        names = module.labels.read_value()
        selected = scores >= module.thresholds.read_value()[None, :]
        # selected first (score - 2 < 0 <= score), each group by descending score
        order = tf.argsort(tf.where(selected, scores, scores - 2.0), axis=-1,
                           direction="DESCENDING", stable=True)
        num_labels = tf.reduce_sum(tf.cast(selected, tf.int32), axis=-1)
        keep = tf.range(num_classes)[None, :] < num_labels[:, None]
        labels_out = tf.where(keep, tf.gather(names, order), tf.constant(""))
        top_scores, top_idx = tf.math.top_k(scores, k=k, sorted=True)
        return {"scores": scores, "labels": labels_out, "num_labels": num_labels,
                "top_k_labels": tf.gather(names, top_idx), "top_k_scores": top_scores}

    @tf.function(input_signature=[], autograph=False)
    def metadata():
        return {"labels": module.labels.read_value(),
                "thresholds": module.thresholds.read_value(),
                "task": tf.constant(task), "image_size": tf.constant([height, width], tf.int32),
                "top_k": tf.constant(k, tf.int32)}

    return {"serving_default": serving_default, "predict_images": predict_images,
            "metadata": metadata}


# ----------------------------------------------------------------------------- files
def _save(module, functions, export_dir):
    signatures = {name: functions[name].get_concrete_function() for name in SIGNATURES}
    tf.saved_model.save(module, export_dir, signatures=signatures)


def _verify_export(export_dir):
    """Cheap completeness check before the rename: the proto lists every signature."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    found = set(proto.meta_graphs[0].signature_def)
    missing = [s for s in SIGNATURES if s not in found]
    if missing:
        raise RuntimeError(f"export_saved_model: signatures {missing} missing in {export_dir}")
    for rel in (("assets", "labels.txt"), (WARMUP_DIR, WARMUP_FILENAME)):
        if not os.path.isfile(os.path.join(export_dir, *rel)):
            raise RuntimeError(f"export_saved_model: {os.path.join(*rel)} was not written")


def models_config_text(model_name, base_path, versions):
    """TF Serving ``ModelServerConfig`` text proto serving ``versions`` of one model."""
    lines = "\n".join(f"        versions: {v}" for v in versions)
    return (
        "# TF Serving model config written by keras_mld.export.export_saved_model (rewritten\n"
        "# on every export). Use: tensorflow_model_server --model_config_file=<this file>\n"
        "# model_version_policy alternatives: latest { num_versions: 2 } | all {}\n"
        "model_config_list {\n"
        "  config {\n"
        f"    name: {json.dumps(model_name, ensure_ascii=False)}\n"
        f"    base_path: {json.dumps(base_path, ensure_ascii=False)}\n"
        '    model_platform: "tensorflow"\n'
        "    model_version_policy {\n"
        "      specific {\n"
        f"{lines}\n"
        "      }\n"
        "    }\n"
        "  }\n"
        "}\n")


def _write_assets(staging, labels, thresholds, task, image_size, top_k, num_classes,
                  limits=None):
    paths = {"labels.txt": os.path.join(staging, "labels.txt"),
             "keras_mld.json": os.path.join(staging, "keras_mld.json")}
    with open(paths["labels.txt"], "w", encoding="utf-8") as f:
        f.write("".join(name + "\n" for name in labels))
    meta = {"format": "keras_mld.export/1", "task": task, "labels": list(labels),
            "thresholds": [float(t) for t in thresholds], "image_size": list(image_size),
            "top_k": min(top_k, num_classes), "signatures": list(SIGNATURES), **(limits or {})}
    with open(paths["keras_mld.json"], "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
    return paths


def export_saved_model(model, base_dir, labels=None, thresholds=None, version=None,
                       image_size=None, task=None, top_k=5, overwrite=False,
                       max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
                       max_batch_size=DEFAULT_MAX_BATCH_SIZE,
                       max_request_bytes=DEFAULT_MAX_REQUEST_BYTES):
    """Export ``model`` (logits ``[B, N]``) for TF Serving; returns ``base_dir/<version>``.

    Args:
        model: a :class:`keras_mld.ImageClassifier` (or a functional ``keras.Model`` with an
            ``images`` input, RGB in [0, 255], and a logits output); a C-Tran
            ``known_labels`` input is fed "all unknown" (-1).
        base_dir: the model's base path (TF Serving ``--model_base_path``).
        labels: ``N`` unique non-empty class names; default: the model's ``class_names``
            (required for a plain ``keras.Model``).
        thresholds: per-class score thresholds in [0, 1] (a float broadcasts); default: the
            model's ``thresholds``, else 0.5.
        version: positive int; default: one more than the largest numeric version present.
        image_size: ``(H, W)``; default: the model's ``image_size``, else its static input
            size.
        task: ``"multilabel"`` (sigmoid) or ``"singlelabel"`` (softmax); default: the
            model's ``task``, else multilabel.
        top_k: number of ``top_k_labels`` / ``top_k_scores`` (capped at ``N``).
        overwrite: replace an existing version (atomically) instead of refusing.
        max_image_pixels: ``predict_images`` refuses (``INVALID_ARGUMENT``) an image whose
            header declares more pixels (default 40,000,000; None: no limit).
        max_batch_size: ``predict_images`` refuses a request of more images (default 256;
            None: no limit).
        max_request_bytes: ``predict_images`` refuses a request of more encoded bytes in
            all, before any header is read (default 32 MiB; None: no limit).

    Also writes ``assets.extra/tf_serving_warmup_requests`` into the version and an
    example ``base_dir/models.config`` serving this version and the newest other one.

    Examples:
        >>> import tempfile, tensorflow as tf, keras_mld
        >>> model = keras_mld.build("small_convnet", head="gap", num_classes=3,
        ...                         input_shape=(32, 32, 3), weights=None)
        >>> path = keras_mld.export.export_saved_model(model, tempfile.mkdtemp(), ["a", "b", "c"])
        >>> serve = tf.saved_model.load(path).signatures["serving_default"]
        >>> tuple(serve(images=tf.zeros((2, 32, 32, 3)))["scores"].shape)
        (2, 3)
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("export_saved_model needs the TensorFlow backend "
                           f"(KERAS_BACKEND=tensorflow), got {keras.backend.backend()!r}")
    if not isinstance(model, keras.Model):
        raise arg_error("model", "a keras.Model", type(model).__name__)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise arg_error("top_k", "an int >= 1", top_k)
    num_classes = count_classes(model)
    task = detect_task(model, task)
    labels = check_labels(labels, num_classes, model)
    thresholds = check_thresholds(thresholds, num_classes, model, labels)
    image_size = check_image_size(model, images_input(model), image_size)
    limits = {"max_image_pixels": check_limit(max_image_pixels, "max_image_pixels"),
              "max_batch_size": check_limit(max_batch_size, "max_batch_size"),
              "max_request_bytes": check_limit(max_request_bytes, "max_request_bytes")}
    base_dir = os.path.abspath(os.fspath(base_dir))
    version = check_version(version, base_dir, overwrite)
    serving_apis()  # fail before writing anything when tensorflow-serving-api is missing

    model_name = os.path.basename(base_dir)

    def write(tmp_dir):
        with tempfile.TemporaryDirectory() as staging:
            assets = _write_assets(staging, labels, thresholds, task, image_size, top_k,
                                   num_classes, limits)
            module = _serving_module(model, labels, thresholds, assets)
            functions = _signature_functions(module, model, task, image_size, int(top_k),
                                             **limits)
            _save(module, functions, tmp_dir)
        write_warmup_requests(tmp_dir, image_size, model_name=model_name)
        _verify_export(tmp_dir)

    # image-independent graph branches (GAT re-weighting, ML-GCN) go in as constants
    frozen = freeze_graph_branches(model)
    try:
        return publish_version(base_dir, version, overwrite, write)
    finally:
        for layer in frozen:
            layer.unfreeze()


def publish_version(base_dir, version, overwrite, write):
    """Writes a version atomically: ``write(tmp_dir)`` fills a hidden temporary directory
    inside ``base_dir`` (TF Serving ignores non-numeric names), which is renamed to
    ``base_dir/<version>`` only when complete (:func:`keras_mld.atomic.atomic_path`), then
    ``base_dir/models.config`` is rewritten (atomically) to serve it and the newest other
    version. On any error nothing is left behind."""
    base_dir = os.path.abspath(base_dir)
    final_dir = os.path.join(base_dir, str(version))
    others = [v for v in numeric_versions(base_dir) if v != version]
    config = models_config_text(os.path.basename(base_dir), base_dir,
                                sorted([version] + others[-1:]))
    with atomic_path(final_dir, overwrite=overwrite, directory=True,
                     caller="export_saved_model") as tmp_dir:
        write(tmp_dir)
    write_text(os.path.join(base_dir, MODELS_CONFIG), config)
    return final_dir
