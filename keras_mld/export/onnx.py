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
import os

import keras_mld.export.deploy as deploy
from keras_mld.untrusted import parse_json

STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


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
                opset=None, overwrite=False, verify=True):
    """Writes ``model`` (logits ``[B, N]``) as an ONNX file at ``path``; returns the path.

    Args:
        model, labels, thresholds, image_size, task: as for
            :func:`keras_mld.export.export_saved_model`.
        path: the ``.onnx`` file; written beside it under a hidden name, then renamed.
        opset: ONNX opset (default: tf2onnx's default).
        overwrite: replace an existing file instead of refusing.
        verify: run the file in ONNX Runtime and refuse it unless its scores equal
            TensorFlow's to 1e-4 on a sample batch.

    Raises:
        ValueError: naming the op and layer ONNX cannot express.
        RuntimeError: when the runtime's scores differ from TensorFlow's.
    """
    meta = deploy.deploy_metadata(model, labels, thresholds, task, image_size, "export_onnx")
    path = deploy.check_destination(path, overwrite, "export_onnx")
    if not path.endswith(".onnx"):
        raise ValueError(f"export_onnx: path must end with '.onnx', got {path!r}")
    proto, images, expected = convert(model, meta, opset)
    data = proto.SerializeToString()
    if verify:
        import onnxruntime

        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        got = session.run([deploy.OUTPUT_NAME], {deploy.INPUT_NAME: images})[0]
        deploy.verify_scores("ONNX Runtime", got, expected)

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
            out[key] = entry.value if key in ("format", "task", "input", "output") \
                else parse_json(entry.value, f"read_metadata: ONNX metadata {entry.key!r}",
                                finite=False)
    return out
