"""TF Serving export of zero-shot models (ML-Decoder (Ridnik et al., arXiv:2111.12933) section
2.3.3). TensorFlow backend only.

``export_zero_shot_saved_model(model, base_dir, ...)`` exports a zero-shot
:class:`keras_mld.ImageClassifier` (``keras_mld.build(..., head="mldecoder",
query_type="word", word_dim=d_w)``, whose label set is model state) or a model with the
inputs ``images [B, H, W, 3]`` and ``label_vectors [M, d_w]``. The label set is an input of every
scoring signature, so new labels need no re-export. Versioning and the atomic write
(hidden temporary directory renamed into place, ``models.config``) are those of
:func:`keras_mld.export.export_saved_model` (its helpers are reused).

Signatures (``B`` and ``M`` may vary per request; ``k = min(top_k, M)``):

- ``serving_default``: ``images`` float32 ``[B, H, W, 3]`` RGB in [0, 255],
  ``label_vectors`` float32 ``[M, d_w]`` -> ``scores`` float32 ``[B, M]`` (sigmoid; softmax
  over the M labels for single-label models).
- ``predict_images``: ``image_bytes`` string ``[B]`` (decoded and resized as in training,
  ``keras_mld.data.image.decode_and_resize``; bounded by ``max_image_pixels`` and
  ``max_batch_size`` as in :mod:`keras_mld.export.saved_model`), ``label_vectors`` ``[M, d_w]`` ->
  ``scores [B, M]``, ``top_k_indices`` int32 ``[B, k]`` (rows of ``label_vectors``, best
  first), ``top_k_scores [B, k]``.
- with ``vocabulary=`` (an embedded word-vector table):
  ``predict_label_names``: ``image_bytes [B]``, ``label_names`` string ``[M]`` -> ``scores``,
  ``top_k_labels`` string ``[B, k]``, ``top_k_scores``, ``label_vectors [M, d_w]``;
  ``label_vectors``: ``label_names [M]`` -> ``label_vectors [M, d_w]``.
  A name is split on whitespace and underscores, each word is looked up as given, then
  lower-cased (as ``keras_mld.zsl.label_vectors``), and the name's vector is the mean of its
  words' vectors (vocabulary entries that themselves hold spaces or underscores can never
  match). An unknown word, or a name without words, fails the request with
  ``InvalidArgumentError`` naming the words (``assertion failed: [label_names: words not in
  the embedded vocabulary:] [...]``).
- ``metadata`` (no inputs): ``labels`` (the optional seen-label names), ``task``,
  ``image_size [2]``, ``word_dim``, ``top_k``, ``vocabulary_size`` (0 without vocabulary).

The graph holds only core TensorFlow ops (hash tables included) and loads with
``import tensorflow`` alone. Warm-up requests (``assets.extra``) exercise every scoring
signature with a small label set.
"""
import json
import os
import re
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_mld.data.image import (
    DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_REQUEST_BYTES, decode_batch)
from keras_mld.export.arguments import check_image_size, check_limit, check_version, detect_task
from keras_mld.export.saved_model import publish_version
from keras_mld.export.warmup import (WARMUP_DIR, WARMUP_FILENAME, encode_image, sample_image,
                                     serving_apis)
from keras_mld.metadata import (IMAGES_INPUT, LABEL_VECTORS_INPUT, check_class_names,
                                scores_from_logits)

BASE_SIGNATURES = ("serving_default", "predict_images", "metadata")
VOCABULARY_SIGNATURES = ("predict_label_names", "label_vectors")
_SPLIT_PATTERN = r"[\s_]+"  # keras_mld.zsl.split_label


def _err(argument, accepted, got):
    return ValueError(f"export_zero_shot_saved_model: {argument} must be {accepted}, "
                      f"got {got!r}")


# ----------------------------------------------------------------------------- validation
def _model_inputs(model):
    """``(images_input, label_vectors_input)`` of ``model``, nothing else allowed."""
    by_name = {t.name: t for t in model.inputs}
    images, vectors = by_name.get(IMAGES_INPUT), by_name.get(LABEL_VECTORS_INPUT)
    if images is None or vectors is None or len(by_name) != 2 or len(images.shape) != 4 \
            or len(vectors.shape) != 2 or vectors.shape[-1] is None:
        raise ValueError(
            "export_zero_shot_saved_model: the model needs exactly the inputs 'images' "
            "[B, H, W, 3] and 'label_vectors' [M, d_w] (keras_mld.build(..., head='mldecoder', "
            f"query_type='word', word_dim=d_w)); its inputs are "
            f"{[(t.name, tuple(t.shape)) for t in model.inputs]}")
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise ValueError("export_zero_shot_saved_model: the model must have one output, logits "
                         f"[B, M]; got {[tuple(o.shape) for o in model.outputs]}")
    return images, vectors


def _state_decoder(model):
    """The zero-shot decoder of a :class:`keras_mld.ImageClassifier` that keeps its label set
    as state (``set_labels``); None for a model with a ``label_vectors`` input."""
    decoder = getattr(model, "zero_shot_decoder", None)
    if decoder is None or getattr(decoder, "label_capacity", None) is None:
        return None
    others = [layer for layer in model.head.layers
              if layer is not decoder and not isinstance(layer, keras.layers.InputLayer)]
    if others:
        raise ValueError("export_zero_shot_saved_model: the head must be the zero-shot decoder "
                         f"alone, it also has {[layer.name for layer in others]}")
    return decoder


def _model_fn(model):
    """``(images, label_vectors [M, d_w]) -> logits [B, M]`` for either kind of model."""
    decoder = _state_decoder(model)
    if decoder is not None:  # the signature's label set replaces the model's state
        def call(images, label_vectors):
            features = model.backbone(model.preprocessor(images), training=False)
            return decoder(features, label_vectors=label_vectors, training=False)
        return call
    images_input, _ = _model_inputs(model)
    keys = ({t.name: k for k, t in model.input.items()} if isinstance(model.input, dict)
            else None)

    def call(images, label_vectors):
        if keys is not None:
            feeds = {keys[IMAGES_INPUT]: images, keys[LABEL_VECTORS_INPUT]: label_vectors}
        else:
            feeds = [images if t is images_input else label_vectors for t in model.inputs]
        return model(feeds, training=False)
    return call


def _check_names(labels):
    if labels is None:
        return []
    try:
        return check_class_names(labels, argument="labels")
    except ValueError as err:
        raise ValueError(f"export_zero_shot_saved_model: {err}") from None


def _vocabulary_arrays(vocabulary, word_dim):
    """``(words, rows, lower_words, lower_rows, matrix)`` of a ``keras_mld.zsl.WordVectors``
    (``.vocab`` word -> row, ``.matrix``) or a ``(words, matrix)`` pair."""
    if hasattr(vocabulary, "vocab") and hasattr(vocabulary, "matrix"):
        vocab, matrix = dict(vocabulary.vocab), vocabulary.matrix
    elif isinstance(vocabulary, (tuple, list)) and len(vocabulary) == 2:
        words, matrix = vocabulary
        if isinstance(words, str):
            raise _err("vocabulary", "(words, matrix) with a sequence of words", words)
        vocab = {}
        for row, word in enumerate(words):
            vocab.setdefault(str(word), row)
    else:
        raise _err("vocabulary", "None, a keras_mld.zsl.WordVectors or a (words, matrix) pair",
                   type(vocabulary).__name__)
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[1] != word_dim or not vocab:
        raise _err("vocabulary", f"a non-empty [vocab_size, word_dim={word_dim}] matrix",
                   f"shape {matrix.shape} with {len(vocab)} words")
    if max(vocab.values()) >= matrix.shape[0] or not np.all(np.isfinite(matrix)):
        raise _err("vocabulary", "rows inside the matrix and finite values", "otherwise")
    lower = {}
    for word, row in vocab.items():  # first spelling of each lower-cased form wins
        lower.setdefault(word.lower(), row)
    return (list(vocab), np.fromiter(vocab.values(), np.int64, len(vocab)), list(lower),
            np.fromiter(lower.values(), np.int64, len(lower)), matrix)


# ----------------------------------------------------------------------------- the graph
def _table(keys, values):
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string),
                                            tf.constant(values, tf.int64)), default_value=-1)


def _serving_module(model, labels, vocab, assets):
    module = tf.Module(name="keras_mld_zero_shot")
    module.model_variables = list(model.variables)
    module.labels = tf.Variable(tf.constant(labels, tf.string, shape=[len(labels)]),
                                trainable=False, name="labels")
    module.labels_file = tf.saved_model.Asset(assets["labels.txt"])
    module.metadata_file = tf.saved_model.Asset(assets["keras_mld.json"])
    if vocab is not None:
        words, rows, lower_words, lower_rows, matrix = vocab
        module.word_vectors = tf.Variable(matrix, trainable=False, name="word_vectors")
        module.vocabulary = _table(words, rows)
        module.vocabulary_lower = _table(lower_words, lower_rows)
    return module


def _quoted(strings):
    """``[n]`` strings -> one string ``a | b c`` (names may hold spaces; the Assert message
    escapes quote characters, so none are used)."""
    return tf.strings.reduce_join(strings, separator=" | ")


def _lookup_fn(module):
    """``label_names [M]`` -> mean word vectors ``[M, d_w]``; unknown words fail the call."""

    def lookup(names):
        text = tf.strings.strip(tf.strings.regex_replace(names, _SPLIT_PATTERN, " "))
        words = tf.strings.split(text)  # ragged [M, (words)], whitespace, no empty words
        flat, owner = words.flat_values, words.value_rowids()
        rows = module.vocabulary.lookup(flat)
        lower = module.vocabulary_lower.lookup(tf.strings.lower(flat, encoding="utf-8"))
        rows = tf.where(rows >= 0, rows, lower)
        num_names = tf.shape(names, out_type=tf.int64)[0]
        counts = words.row_lengths()
        unknown = rows < 0
        bad_name = tf.math.unsorted_segment_max(tf.cast(unknown, tf.int32), owner,
                                                num_names) > 0
        checks = [
            tf.debugging.Assert(tf.logical_not(tf.reduce_any(unknown)), [
                "label_names: words not in the embedded vocabulary:",
                _quoted(tf.boolean_mask(flat, unknown)), "in the names:",
                _quoted(tf.boolean_mask(names, bad_name))]),
            tf.debugging.Assert(tf.reduce_all(counts > 0), [
                "label_names: names without any word:",
                _quoted(tf.boolean_mask(names, counts <= 0))])]
        with tf.control_dependencies(checks):
            vectors = tf.gather(module.word_vectors, tf.maximum(rows, 0))
        sums = tf.math.unsorted_segment_sum(vectors, owner, num_names)
        return sums / tf.cast(tf.maximum(counts, 1), tf.float32)[:, None]

    return lookup


def _signature_functions(module, model, task, image_size, word_dim, top_k,
                         max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
                         max_batch_size=DEFAULT_MAX_BATCH_SIZE,
                         max_request_bytes=DEFAULT_MAX_REQUEST_BYTES):
    model_fn = _model_fn(model)
    height, width = image_size
    images_spec = tf.TensorSpec([None, height, width, 3], tf.float32, name="images")
    vectors_spec = tf.TensorSpec([None, word_dim], tf.float32, name="label_vectors")
    bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")
    names_spec = tf.TensorSpec([None], tf.string, name="label_names")

    @tf.function(input_signature=[images_spec, vectors_spec], autograph=False)
    def scores_fn(images, label_vectors):
        return scores_from_logits(model_fn(images, label_vectors), task)

    def decode(image_bytes):
        return decode_batch(image_bytes, (height, width), max_image_pixels, max_batch_size,
                            max_request_bytes)

    def top(scores):
        return tf.math.top_k(scores, k=tf.minimum(top_k, tf.shape(scores)[1]), sorted=True)

    @tf.function(input_signature=[images_spec, vectors_spec], autograph=False)
    def serving_default(images, label_vectors):
        return {"scores": scores_fn(images, label_vectors)}

    @tf.function(input_signature=[bytes_spec, vectors_spec], autograph=False)
    def predict_images(image_bytes, label_vectors):
        scores = scores_fn(decode(image_bytes), label_vectors)
        top_scores, top_idx = top(scores)
        return {"scores": scores, "top_k_indices": top_idx, "top_k_scores": top_scores}

    vocabulary_size = int(module.word_vectors.shape[0]) if hasattr(module, "word_vectors") else 0

    @tf.function(input_signature=[], autograph=False)
    def metadata():
        return {"labels": module.labels.read_value(), "task": tf.constant(task),
                "image_size": tf.constant([height, width], tf.int32),
                "word_dim": tf.constant(word_dim, tf.int32), "top_k": tf.constant(top_k, tf.int32),
                "vocabulary_size": tf.constant(vocabulary_size, tf.int64)}

    functions = {"serving_default": serving_default, "predict_images": predict_images,
                 "metadata": metadata}
    if vocabulary_size:
        lookup = _lookup_fn(module)

        @tf.function(input_signature=[bytes_spec, names_spec], autograph=False)
        def predict_label_names(image_bytes, label_names):
            vectors = lookup(label_names)
            scores = scores_fn(decode(image_bytes), vectors)
            top_scores, top_idx = top(scores)
            return {"scores": scores, "top_k_labels": tf.gather(label_names, top_idx),
                    "top_k_scores": top_scores, "label_vectors": vectors}

        @tf.function(input_signature=[names_spec], autograph=False)
        def label_vectors(label_names):
            return {"label_vectors": lookup(label_names)}

        functions.update(predict_label_names=predict_label_names, label_vectors=label_vectors)
    return functions


# ----------------------------------------------------------------------------- files
def _warmup_logs(image_size, word_dim, signatures, vocab_words, model_name):
    predict_pb2, prediction_log_pb2 = serving_apis()
    height, width = image_size
    vectors = np.random.default_rng(0).normal(size=(3, word_dim)).astype(np.float32)
    blobs = [encode_image(sample_image(48, 64, seed=2), "png"),
             encode_image(sample_image(64, 40, seed=3), "jpeg")]
    inputs = {
        "serving_default": {"images": sample_image(height, width, seed=1)[None].astype(np.float32),
                            "label_vectors": vectors},
        "predict_images": {"image_bytes": blobs, "label_vectors": vectors},
    }
    names = [w for w in vocab_words if w and not re.search(_SPLIT_PATTERN, w)][:2]
    if names:  # words that split into themselves, so that the lookup finds them
        inputs["predict_label_names"] = {"image_bytes": blobs, "label_names": names}
    logs = []
    for signature in signatures:
        if signature not in inputs:
            continue
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        for name, value in inputs[signature].items():
            if isinstance(value, list):
                proto = tf.make_tensor_proto(value, dtype=tf.string, shape=[len(value)])
            else:
                proto = tf.make_tensor_proto(value, dtype=tf.float32)
            request.inputs[name].CopyFrom(proto)
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def _write_warmup(export_dir, logs):
    directory = os.path.join(export_dir, WARMUP_DIR)
    os.makedirs(directory, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(directory, WARMUP_FILENAME)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())


def _write_assets(staging, labels, meta):
    paths = {"labels.txt": os.path.join(staging, "labels.txt"),
             "keras_mld.json": os.path.join(staging, "keras_mld.json")}
    with open(paths["labels.txt"], "w", encoding="utf-8") as f:
        f.write("".join(name + "\n" for name in labels))
    with open(paths["keras_mld.json"], "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
    return paths


def _verify_export(export_dir, signatures):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    missing = [s for s in signatures if s not in proto.meta_graphs[0].signature_def]
    if missing:
        raise RuntimeError(f"export_zero_shot_saved_model: signatures {missing} missing")
    if not os.path.isfile(os.path.join(export_dir, WARMUP_DIR, WARMUP_FILENAME)):
        raise RuntimeError("export_zero_shot_saved_model: the warm-up file was not written")


def export_zero_shot_saved_model(model, base_dir, vocabulary=None, labels=None, version=None,
                                 image_size=None, task=None, top_k=5, overwrite=False,
                                 max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
                                 max_batch_size=DEFAULT_MAX_BATCH_SIZE,
                                 max_request_bytes=DEFAULT_MAX_REQUEST_BYTES):
    """Export a zero-shot model for TF Serving; the label set is a signature input.

    Args:
        model: a zero-shot :class:`keras_mld.ImageClassifier` (``keras_mld.build(...,
            head="mldecoder", query_type="word", word_dim=d_w)``; its label-set state is
            replaced by the signatures' ``label_vectors``), or a functional ``keras.Model``
            with inputs ``images [B, H, W, 3]`` (RGB [0, 255]) and ``label_vectors [M, d_w]``,
            output logits ``[B, M]``.
        base_dir: the model's base path (TF Serving ``--model_base_path``).
        vocabulary: None, a ``keras_mld.zsl.WordVectors`` or ``(words, matrix [V, d_w])``:
            embedded for the ``predict_label_names`` / ``label_vectors`` signatures.
        labels: optional names of the labels the model was trained on (``metadata``,
            ``assets/labels.txt``; default: the model's ``class_names``); scoring never
            depends on them.
        version, image_size, overwrite, max_image_pixels, max_batch_size, max_request_bytes: as
            :func:`keras_mld.export.export_saved_model` (the limits bound the image-bytes
            signatures ``predict_images`` and ``predict_label_names``).
        task: ``"multilabel"`` (sigmoid) or ``"singlelabel"`` (softmax over the M labels);
            default: the model's ``task``, else multilabel.
        top_k: ``top_k_*`` outputs hold ``min(top_k, M)`` labels.

    Returns ``base_dir/<version>``.

    Examples:
        >>> import os, tempfile, numpy as np, keras_mld
        >>> model = keras_mld.build("small_convnet", head="mldecoder", num_classes=3,
        ...                         input_shape=(32, 32, 3), weights=None, query_type="word",
        ...                         word_dim=4, num_groups=3, embed_dim=8, num_heads=2, ff_dim=16)
        >>> vocab = (["cat", "dog"], np.stack([np.ones(4), -np.ones(4)]))   # (words, matrix)
        >>> path = keras_mld.export.export_zero_shot_saved_model(model, tempfile.mkdtemp(), vocab)
        >>> os.path.basename(path)
        '1'
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("export_zero_shot_saved_model needs the TensorFlow backend "
                           f"(KERAS_BACKEND=tensorflow), got {keras.backend.backend()!r}")
    if not isinstance(model, keras.Model):
        raise _err("model", "a keras.Model", type(model).__name__)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise _err("top_k", "an int >= 1", top_k)
    decoder = _state_decoder(model)
    if decoder is not None:
        images_input, word_dim = model.inputs[0], int(decoder.word_dim)
    else:
        images_input, vectors_input = _model_inputs(model)
        word_dim = int(vectors_input.shape[-1])
    task = detect_task(model, task)
    labels = _check_names(labels if labels is not None else getattr(model, "class_names", None))
    image_size = check_image_size(model, images_input, image_size)
    limits = {"max_image_pixels": check_limit(max_image_pixels, "max_image_pixels"),
              "max_batch_size": check_limit(max_batch_size, "max_batch_size"),
              "max_request_bytes": check_limit(max_request_bytes, "max_request_bytes")}
    vocab = None if vocabulary is None else _vocabulary_arrays(vocabulary, word_dim)
    signatures = BASE_SIGNATURES + (VOCABULARY_SIGNATURES if vocab is not None else ())
    base_dir = os.path.abspath(os.fspath(base_dir))
    version = check_version(version, base_dir, overwrite)
    serving_apis()  # fail before writing anything when tensorflow-serving-api is missing

    model_name = os.path.basename(base_dir)
    meta = {"format": "keras_mld.export.zero_shot/1", "task": task, "labels": labels,
            "image_size": list(image_size), "word_dim": word_dim, "top_k": int(top_k),
            "vocabulary_size": 0 if vocab is None else len(vocab[0]),
            "signatures": list(signatures), **limits}

    def write(tmp_dir):
        with tempfile.TemporaryDirectory() as staging:
            module = _serving_module(model, labels, vocab, _write_assets(staging, labels, meta))
            functions = _signature_functions(module, model, task, image_size, word_dim,
                                             int(top_k), **limits)
            tf.saved_model.save(module, tmp_dir, signatures={
                name: fn.get_concrete_function() for name, fn in functions.items()})
        _write_warmup(tmp_dir, _warmup_logs(image_size, word_dim, signatures,
                                            [] if vocab is None else vocab[0], model_name))
        _verify_export(tmp_dir, signatures)

    return publish_version(base_dir, version, overwrite, write)
