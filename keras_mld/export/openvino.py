"""OpenVINO IR export. TensorFlow backend only.

``export_openvino(model, "model_ov", labels)`` writes a directory with ``model.xml`` and
``model.bin``: input ``images`` float32 ``[?, H, W, 3]`` RGB in [0, 255] (dynamic batch),
output ``scores`` float32 ``[?, N]`` (sigmoid, or softmax for single-label models), and in
the model's ``rt_info`` under ``keras_mld`` the class names, thresholds, task and image size
(JSON strings; ``read_metadata`` decodes them).

Which converter, and why: Keras' own ``model.export(format="openvino")`` handles every
keras_mld head (on the TensorFlow backend it runs ``openvino.convert_model`` on a
``tf.function`` of the model call) but exports logits and needs every model input fed; the
deployment contract is probabilities from pixels alone, so this module runs the same
converter, ``openvino.convert_model``, on the graph the SavedModel serves
(``keras_mld.export.deploy.scores_function``). Two OpenVINO defaults would silently change
the model and are overridden: ``save_model`` compresses weights to float16 by default
(here ``compress_to_fp16=False``), and the CPU plugin runs in bfloat16 on CPUs with
AVX512-BF16/AMX (measured: ML-Decoder scores off by 2e-3, logits by 1e-2), a hint
``compile_model`` does not take from the IR. Compile with
``{"INFERENCE_PRECISION_HINT": "f32"}``
(:data:`COMPILE_CONFIG`; also written into the IR's ``rt_info`` under
``keras_mld/compile_config`` for deployment tools to read). With ``verify=True`` (default)
OpenVINO, compiled so, must reproduce TensorFlow's scores to 1e-4 on a sample batch before
the directory is renamed into place.
An op OpenVINO cannot convert is an error naming it.
"""
import json
import os
import re

import keras_mld.export.deploy as deploy
from keras_mld.untrusted import parse_json

XML, BIN = "model.xml", "model.bin"
COMPILE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def _openvino(caller="export_openvino"):
    try:
        import openvino
    except ImportError as e:
        raise ImportError(f"{caller} needs openvino (pip install 'keras-mld[deploy]'): {e}") \
            from None
    return openvino


def _where(fn, message):
    """`` (op X in layer a/b)`` for the ops OpenVINO's report names, from the traced graph."""
    found = re.search(r"No conversion rule found for operations: ([^\n]*)", message)
    if not found:
        return ""
    ops = {op.strip() for op in found.group(1).split(",") if op.strip()}
    graph = fn.get_concrete_function().graph
    layers = {}
    for op in graph.get_operations():
        if op.type in ops:
            parts = op.name.split("/")
            layers.setdefault(op.type, set()).add("/".join(parts[:2]) if len(parts) > 1
                                                  else op.name)
    return " (" + "; ".join(f"op {op} in {', '.join(sorted(layers.get(op, ['?']))[:3])}"
                            for op in sorted(ops)) + ")"


def convert(model, meta):
    """The ``openvino.Model`` of ``model`` under the deployment contract, and the sample batch
    with TensorFlow's scores for it."""
    ov = _openvino()
    with deploy.frozen(model):
        fn = deploy.scores_function(model, meta)
        images = deploy.sample_images(meta)
        expected = fn(images).numpy()
        try:
            ov_model = ov.convert_model(fn)
        except Exception as e:  # OpConversionFailure names the TF ops it cannot take
            raise ValueError(f"export_openvino: OpenVINO cannot convert {model.name!r}"
                             f"{_where(fn, str(e))}: {type(e).__name__}: {e}") from None
    # the TF frontend also returns dangling tensors of the graph (ML-Decoder: a shape
    # slice) as results: keep only the scores
    scores_name = f"{deploy.OUTPUT_NAME}:0"
    for result in list(ov_model.get_results()):
        if scores_name not in result.output(0).get_names():
            ov_model.remove_result(result)
    ov_model.validate_nodes_and_infer_types()
    if len(ov_model.inputs) != 1 or len(ov_model.outputs) != 1:
        raise RuntimeError("export_openvino: expected one input and one output, got "
                           f"{ov_model.inputs} -> {ov_model.outputs}")
    ov_model.inputs[0].get_tensor().set_names({deploy.INPUT_NAME})
    ov_model.outputs[0].get_tensor().set_names({deploy.OUTPUT_NAME})
    for key, value in deploy.metadata_strings(meta).items():
        ov_model.set_rt_info(value, ["keras_mld", key[len("keras_mld."):]])
    ov_model.set_rt_info(json.dumps(COMPILE_CONFIG), ["keras_mld", "compile_config"])
    return ov_model, images, expected


def export_openvino(model, path, labels=None, thresholds=None, image_size=None, task=None,
                    overwrite=False, verify=True):
    """Writes ``model`` (logits ``[B, N]``) as OpenVINO IR into the directory ``path``
    (``model.xml`` + ``model.bin``); returns ``path``.

    Args:
        model, labels, thresholds, image_size, task: as for
            :func:`keras_mld.export.export_saved_model`.
        path: the directory to create; written beside it under a hidden name, then renamed.
        overwrite: replace an existing directory (atomically) instead of refusing.
        verify: compile the IR on OpenVINO's CPU device and refuse it unless its scores
            equal TensorFlow's to 1e-4 on a sample batch.
    """
    meta = deploy.deploy_metadata(model, labels, thresholds, task, image_size,
                                  "export_openvino")
    path = deploy.check_destination(path, overwrite, "export_openvino")
    ov_model, images, expected = convert(model, meta)
    ov = _openvino()

    def write(tmp):
        ov.save_model(ov_model, os.path.join(tmp, XML), compress_to_fp16=False)
        with open(os.path.join(tmp, "keras_mld.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1, ensure_ascii=False)
        if verify:
            compiled = ov.Core().compile_model(os.path.join(tmp, XML), "CPU", COMPILE_CONFIG)
            got = compiled(images)[compiled.outputs[0]]
            deploy.verify_scores("OpenVINO", got, expected)

    return deploy.publish(path, overwrite, write, directory=True, caller="export_openvino")


def read_metadata(path_or_model):
    """``{key: value}`` of a keras_mld OpenVINO IR's ``rt_info["keras_mld"]``."""
    if isinstance(path_or_model, (str, os.PathLike)):
        path = os.fspath(path_or_model)
        path = os.path.join(path, XML) if os.path.isdir(path) else path
        path_or_model = _openvino().Core().read_model(path)
    info = path_or_model.get_rt_info()["keras_mld"]
    out = {}
    for key in info:
        value = str(info[key].astype(str)) if hasattr(info[key], "astype") else str(info[key])
        out[key] = value if key in ("format", "task", "input", "output") else parse_json(
            value, f"read_metadata: OpenVINO rt_info keras_mld.{key}", finite=False)
    return out
