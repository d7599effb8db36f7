"""ONNX export for ONNX Runtime (and other ONNX runtimes). TensorFlow backend only.

``export_onnx(model, "model.onnx", labels)`` writes one ``.onnx`` file: input ``images``
float32 ``[batch, H, W, 3]`` RGB in [0, 255] (``batch`` dynamic), output ``scores`` float32
``[batch, N]`` (sigmoid, or softmax for single-label models), and in ``metadata_props``
the class names, thresholds, task and image size (``keras_mld.labels``,
``keras_mld.thresholds``, ... as JSON strings; see :mod:`keras_mld.export.deploy`).

Which converter, and why: Keras' own ``model.export(format="onnx")`` handles every
keras_mld head (it runs ``tf2onnx.convert.from_function`` on a ``tf.function`` of the model
call), but it exports the model's raw output -- logits -- and needs every model input fed,
whereas the deployment contract is probabilities from pixels alone (C-Tran's
``known_labels`` fed "all unknown", the graph heads' image-independent branches folded into
constants). So this module runs the same converter, tf2onnx, on the graph the SavedModel
serves (``keras_mld.export.deploy.scores_function``, i.e. ``serving_default``), with Keras'
numpy-2 compatibility patch for tf2onnx. The file is checked with ``onnx.checker``, any op
outside the standard ONNX domains is an error naming it (and the Keras layer it comes from),
and with ``verify=True`` (default) ONNX Runtime must reproduce TensorFlow's scores on a
sample batch to 1e-4 before the file is renamed into place.
"""
import json
import os
import re
import tempfile

import keras_mld.export.deploy as deploy
from keras_mld.export.precision import (DEFAULT_CALIBRATION_SIZE, DEFAULT_MAX_MAP_DROP,
                                        accuracy_figures, batches, check_arguments,
                                        check_drop, check_float_islands, measurement_set,
                                        run_batched)
from keras_mld.untrusted import parse_json

STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
# The session options every file was verified (f32) and measured (int8) with, written into
# it (``keras_mld.session_options``) for a consumer to apply (README, "ONNX Runtime").
# Measured (batch 8, 2 cores; BENCHMARKS.md, "Reduced precision"): ORT_ENABLE_ALL (its NCHWc
# convolutions; the graph from tf2onnx keeps only the input and feature-map Transposes of the
# NHWC contract) runs 1.2x faster than ORT_ENABLE_EXTENDED on efficientnetv2_s + ML-Decoder.
# Intra-op threads that sleep instead of spin-waiting between ops keep the speed when other
# processes share the cores (2 processes spinning beside it: the demo model 2.47x TensorFlow
# vs 1.37x spinning, tresnet_m 1.07x vs 1.00x) and cost a little on a machine the model has
# to itself (1.68x vs 1.83x, 1.02x vs 1.09x).
SESSION_OPTIONS = {"graph_optimization_level": "ORT_ENABLE_ALL", "intra_op_num_threads": 0,
                   "execution_mode": "ORT_SEQUENTIAL",
                   "session_configs": {"session.intra_op.allow_spinning": "0"},
                   "providers": ["CPUExecutionProvider"]}
# kept in float in an int8 export (ONNX Runtime nodes_to_exclude): none by default.
# Measured on the demo's trained ML-Decoder (600 validation images): keeping the attention
# score path (keras_mld.export.precision.ATTENTION_ISLANDS) in float did not reduce the mAP
# drop (BENCHMARKS.md, "Reduced precision"), so nothing is excluded unless the caller asks
DEFAULT_FLOAT_ISLANDS = ()


def session_of(data):
    """An ONNX Runtime CPU session of the model bytes under :data:`SESSION_OPTIONS`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                               SESSION_OPTIONS["graph_optimization_level"])
    options.intra_op_num_threads = SESSION_OPTIONS["intra_op_num_threads"]
    options.execution_mode = getattr(ort.ExecutionMode, SESSION_OPTIONS["execution_mode"])
    for key, value in SESSION_OPTIONS["session_configs"].items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(data, options, providers=SESSION_OPTIONS["providers"])


def _onnx_module():
    return _modules()[0]


def _set_metadata(proto, entries):
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for key, value in keep + list(entries.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def quantize_int8(data, calibration_images, float_islands=None):
    """ONNX Runtime static quantisation (QDQ) of an f32 model's bytes, calibrated on
    ``calibration_images``; nodes whose names match ``float_islands`` are not quantised
    (``nodes_to_exclude``: the node runs in float, though in the QDQ format an input its
    producer quantised still reaches it through a Quantize/Dequantize pair). Returns
    ``(bytes, excluded node names)``."""
    from onnxruntime import quantization as q

    onnx = _onnx_module()
    patterns = DEFAULT_FLOAT_ISLANDS if float_islands is None else tuple(float_islands)

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.items = iter(batches(calibration_images, 8))

        def get_next(self):
            batch = next(self.items, None)
            return None if batch is None else {deploy.INPUT_NAME: batch}

    with tempfile.TemporaryDirectory() as tmp:
        src, prep, out = (os.path.join(tmp, f) for f in ("f32.onnx", "prep.onnx", "int8.onnx"))
        with open(src, "wb") as f:
            f.write(data)
        # ORT's recommended pre-processing (shape inference, graph fusions) before QDQ
        q.quant_pre_process(src, prep, skip_symbolic_shape=True)
        exclude = [n.name for n in onnx.load(prep).graph.node
                   if any(re.search(p, n.name) for p in patterns)]
        q.quantize_static(prep, out, Reader(), quant_format=q.QuantFormat.QDQ,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          per_channel=True, nodes_to_exclude=exclude,
                          calibrate_method=q.CalibrationMethod.MinMax)
        with open(out, "rb") as f:
            return f.read(), sorted(exclude)


def _modules(caller="export_onnx"):
    try:
        import onnx
        import tf2onnx
    except ImportError as e:
        raise ImportError(f"{caller} needs tf2onnx and onnx (pip install 'keras-mld[deploy]'): "
                          f"{e}") from None
    try:  # tf2onnx 1.17 still uses aliases numpy 2 removed; Keras ships the fix it uses
        from keras.src.export.tf2onnx_lib import patch_tf2onnx
        patch_tf2onnx()
    except ImportError:
        pass
    return onnx, tf2onnx


def _layer_of(node_name):
    """The Keras layer a converted node comes from (its TF name scope), for error messages."""
    parts = [p for p in node_name.split("/") if p]
    return "/".join(parts[:2]) if len(parts) > 1 else node_name


def _check_ops(onnx, proto):
    bad = {}
    for node in proto.graph.node:
        known = node.domain in STANDARD_DOMAINS
        if known:
            try:
                onnx.defs.get_schema(node.op_type, max_inclusive_version=proto.opset_import[0]
                                     .version, domain=node.domain)
            except Exception:
                known = False
        if not known:
            bad.setdefault(f"{node.domain + '.' if node.domain else ''}{node.op_type}",
                           set()).add(_layer_of(node.name))
    if bad:
        details = "; ".join(f"{op} (in {', '.join(sorted(layers)[:3])})"
                            for op, layers in sorted(bad.items()))
        raise ValueError(f"export_onnx: ONNX has no standard op for {details}; this model "
                         "cannot be exported to ONNX")


def _rename(proto, old, new):
    for node in proto.graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]
    for value in list(proto.graph.input) + list(proto.graph.output):
        if value.name == old:
            value.name = new


def convert(model, meta, opset=None):
    """The ``onnx.ModelProto`` of ``model`` under the deployment contract, and the sample
    batch with TensorFlow's scores for it."""
    onnx, tf2onnx = _modules()
    with deploy.frozen(model):
        fn = deploy.scores_function(model, meta)
        images = deploy.sample_images(meta)
        expected = fn(images).numpy()
        try:
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature,
                                                     opset=opset)
        except Exception as e:  # tf2onnx reports unsupported TF ops this way
            raise ValueError(f"export_onnx: tf2onnx cannot convert {model.name!r}: "
                             f"{type(e).__name__}: {e}") from None
    _check_ops(onnx, proto)
    if len(proto.graph.input) != 1 or len(proto.graph.output) != 1:
        raise RuntimeError("export_onnx: expected one input and one output, got "
                           f"{[i.name for i in proto.graph.input]} -> "
                           f"{[o.name for o in proto.graph.output]}")
    _rename(proto, proto.graph.input[0].name, deploy.INPUT_NAME)
    _rename(proto, proto.graph.output[0].name, deploy.OUTPUT_NAME)
    for value in (proto.graph.input[0], proto.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del proto.metadata_props[:]
    for key, value in deploy.metadata_strings(meta).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "keras_mld"
    onnx.checker.check_model(proto)
    return proto, images, expected


def export_onnx(model, path, labels=None, thresholds=None, image_size=None, task=None,
                opset=None, overwrite=False, verify=True, precision="f32", calibration_data=None,
                calibration_size=DEFAULT_CALIBRATION_SIZE, validation_data=None,
                max_map_drop=DEFAULT_MAX_MAP_DROP, float_islands=None):
    """Writes ``model`` (logits ``[B, N]``) as an ONNX file at ``path``; returns the path.

    Args:
        model, labels, thresholds, image_size, task: as for
            :func:`keras_mld.export.export_saved_model`.
        path: the ``.onnx`` file; written beside it under a hidden name, then renamed.
        opset: ONNX opset (default: tf2onnx's default).
        overwrite: replace an existing file instead of refusing.
        verify: run the f32 file in ONNX Runtime and refuse it unless its scores equal
            TensorFlow's to 1e-4 on a sample batch.
        precision: ``"f32"`` (default) or ``"int8"``: post-training static quantisation by
            ONNX Runtime (``quantize_static``, QDQ, per-channel int8 weights, uint8
            activations, MinMax calibration), measured as below.
        calibration_data: int8 only: a dataset path (COCO ``.json``, ``.csv`` or image
            folder, decoded and resized as the served signature does), a
            ``tf.data.Dataset`` of images or ``(images, labels)``, an array
            ``[n, H, W, 3]`` in [0, 255] or a tuple ``(images, labels)``.
        calibration_size: at most this many calibration images (default 300).
        validation_data: labelled images (same forms) on which the int8 model's cost is
            measured; default: the calibration images (they need labels then).
        max_map_drop: refuse the export when its mAP is more than this many points (0-100)
            below the f32 model's (default 1.0).
        float_islands: regular expressions over node names kept in float (not quantised);
            None: :data:`DEFAULT_FLOAT_ISLANDS`; ``()``: quantise everything.

    An int8 file records its cost in ``metadata_props`` (``keras_mld.precision``,
    ``keras_mld.accuracy``: :func:`keras_mld.export.precision.accuracy_figures`), and
    every file the ONNX Runtime session options it was verified and measured with
    (``keras_mld.session_options``).

    Raises:
        ValueError: naming the op and layer ONNX cannot express, a bad argument, or an int8
            model that loses more than ``max_map_drop`` points of mAP (with its figures;
            nothing is written).
        RuntimeError: when the runtime's scores differ from TensorFlow's.
    """
    precision = check_arguments(precision, calibration_data, calibration_size,
                                validation_data, max_map_drop, "export_onnx")
    float_islands = check_float_islands(float_islands, "export_onnx")
    meta = deploy.deploy_metadata(model, labels, thresholds, task, image_size, "export_onnx")
    path = deploy.check_destination(path, overwrite, "export_onnx")
    if not path.endswith(".onnx"):
        raise ValueError(f"export_onnx: path must end with '.onnx', got {path!r}")
    measured = None
    if precision != "f32":
        measured = measurement_set(meta, calibration_data, calibration_size, validation_data,
                                   "export_onnx")
    proto, images, expected = convert(model, meta, opset)
    _set_metadata(proto, {"keras_mld.precision": "f32",
                          "keras_mld.session_options": json.dumps(SESSION_OPTIONS)})
    data = proto.SerializeToString()
    if verify:
        got = session_of(data).run([deploy.OUTPUT_NAME], {deploy.INPUT_NAME: images})[0]
        deploy.verify_scores("ONNX Runtime", got, expected)
    if precision == "int8":
        calib, val_images, val_labels, which = measured
        with deploy.frozen(model):
            reference = run_batched(deploy.scores_function(model, meta), val_images)
        data, excluded = quantize_int8(data, calib, float_islands)
        session = session_of(data)
        scores = run_batched(lambda b: session.run([deploy.OUTPUT_NAME],
                                                   {deploy.INPUT_NAME: b})[0], val_images)
        figures = accuracy_figures(
            "int8", "onnxruntime", val_labels, reference, scores, meta["thresholds"],
            max_map_drop, which, {"calibration_images": int(len(calib)),
                                  "float_islands": excluded})
        check_drop(figures, "export_onnx")
        f32_metadata = {p.key: p.value for p in proto.metadata_props}
        proto = _onnx_module().load_from_string(data)
        proto.producer_name = "keras_mld"
        _set_metadata(proto, {**f32_metadata, "keras_mld.precision": "int8",
                              "keras_mld.accuracy": json.dumps(figures)})
        data = proto.SerializeToString()

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return deploy.publish(path, overwrite, write, directory=False, caller="export_onnx")


def read_metadata(path_or_proto):
    """``{key: value}`` of a keras_mld ONNX file's metadata (JSON values decoded)."""
    import onnx

    proto = path_or_proto if hasattr(path_or_proto, "metadata_props") else onnx.load(
        os.fspath(path_or_proto))
    out = {}
    for entry in proto.metadata_props:
        if entry.key.startswith("keras_mld."):
            key = entry.key[len("keras_mld."):]
            out[key] = entry.value if key in ("format", "task", "input", "output",
                                              "precision") \
                else parse_json(entry.value, f"read_metadata: ONNX metadata {entry.key!r}",
                                finite=False)
    return out
