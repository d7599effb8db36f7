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
``{"INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": "NO"}`` (:data:`COMPILE_CONFIG`:
f32, and threads not pinned to cores; also written into the IR's ``rt_info`` under
``keras_mld/compile_config`` for deployment tools to read). With ``verify=True`` (default)
OpenVINO, compiled so, must reproduce TensorFlow's scores to 1e-4 on a sample batch before
the directory is renamed into place.
An op OpenVINO cannot convert is an error naming it. ``precision="bf16"`` / ``"int8"``
export a reduced-precision model whose cost is measured and recorded
(:mod:`keras_mld.export.precision`).
"""
import json
import os
import re

import numpy as np

import keras_mld.export.deploy as deploy
from keras_mld.export.precision import (DEFAULT_CALIBRATION_SIZE, DEFAULT_MAX_MAP_DROP,
                                        EVAL_BATCH, accuracy_figures, check_arguments,
                                        check_drop, check_float_islands, measurement_set,
                                        run_batched)
from keras_mld.untrusted import parse_json

XML, BIN = "model.xml", "model.bin"
# Threads not pinned to cores: the CPU plugin pins its threads by default, and where other
# processes share the cores a pinned thread waits for its core instead of moving to a free
# one. Measured (BENCHMARKS.md, "Reduced precision"): the demo's int8 model, 2 cores with 2
# other processes spinning, 3,600 img/s unpinned vs 1,410 pinned (6,150 vs 6,110 alone).
UNPINNED = {"ENABLE_CPU_PINNING": "NO"}
COMPILE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", **UNPINNED}
# the compile configuration each precision is exported (and measured) with: an int8 IR
# runs its quantised ops in int8 and keeps every other op in f32
COMPILE_CONFIGS = {"f32": COMPILE_CONFIG,
                   "bf16": {"INFERENCE_PRECISION_HINT": "bf16", **UNPINNED},
                   "int8": COMPILE_CONFIG}
# kept in float in an int8 export (NNCF ignored_scope): none by default.
# Measured on the demo's trained ML-Decoder (600 validation images): keeping the attention
# score path (keras_mld.export.precision.ATTENTION_ISLANDS) in float did not reduce the mAP
# drop (BENCHMARKS.md, "Reduced precision"), so nothing is excluded unless the caller asks
DEFAULT_FLOAT_ISLANDS = ()


def quantize_int8(ov_model, calibration_images, float_islands=None):
    """NNCF post-training quantisation of an OpenVINO model, calibrated on
    ``calibration_images`` (one image per sample); nodes whose names match
    ``float_islands`` stay float. Returns ``(model, names of the float islands)``."""
    try:
        import nncf
    except ImportError as e:
        raise ImportError(f"export_openvino(precision='int8') needs nncf (pip install "
                          f"'keras-mld[deploy]'): {e}") from None
    patterns = list(DEFAULT_FLOAT_ISLANDS if float_islands is None else float_islands)
    names = sorted(op.get_friendly_name() for op in ov_model.get_ordered_ops()
                   if any(re.search(p, op.get_friendly_name()) for p in patterns))
    dataset = nncf.Dataset([calibration_images[i:i + 1] for i in range(len(calibration_images))])
    quantized = nncf.quantize(ov_model, dataset, subset_size=len(calibration_images),
                              ignored_scope=nncf.IgnoredScope(names=names, validate=False))
    return quantized, names


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
                    overwrite=False, verify=True, precision="f32", calibration_data=None,
                    calibration_size=DEFAULT_CALIBRATION_SIZE, validation_data=None,
                    max_map_drop=DEFAULT_MAX_MAP_DROP, float_islands=None):
    """Writes ``model`` (logits ``[B, N]``) as OpenVINO IR into the directory ``path``
    (``model.xml`` + ``model.bin``); returns ``path``.

    Args:
        model, labels, thresholds, image_size, task: as for
            :func:`keras_mld.export.export_saved_model`.
        path: the directory to create; written beside it under a hidden name, then renamed.
        overwrite: replace an existing directory (atomically) instead of refusing.
        verify: compile the f32 IR on OpenVINO's CPU device and refuse it unless its
            scores equal TensorFlow's to 1e-4 on a sample batch.
        precision: ``"f32"`` (default), ``"bf16"`` (f32 weights; the CPU plugin runs in
            bfloat16: ``INFERENCE_PRECISION_HINT=bf16`` in ``rt_info``'s
            ``compile_config``) or ``"int8"`` (NNCF post-training quantisation,
            ``nncf.quantize``), measured as below.
        calibration_data, calibration_size, validation_data, max_map_drop: as for
            :func:`keras_mld.export.export_onnx` (bf16 needs no calibration: its cost is
            measured on ``validation_data``, else ``calibration_data``).
        float_islands: int8 only: regular expressions over node names kept in float
            (NNCF ``ignored_scope``); None: :data:`DEFAULT_FLOAT_ISLANDS`; ``()``: none.

    A bf16 or int8 IR records its cost in ``rt_info["keras_mld"]["accuracy"]`` and
    ``keras_mld.json`` (``"accuracy"``; :func:`keras_mld.export.precision.accuracy_figures`),
    measured compiled with the IR's ``compile_config``.
    """
    precision = check_arguments(precision, calibration_data, calibration_size,
                                validation_data, max_map_drop, "export_openvino")
    float_islands = check_float_islands(float_islands, "export_openvino")
    meta = deploy.deploy_metadata(model, labels, thresholds, task, image_size,
                                  "export_openvino")
    path = deploy.check_destination(path, overwrite, "export_openvino")
    measured = None
    if precision != "f32":
        measured = measurement_set(meta, calibration_data, calibration_size, validation_data,
                                   "export_openvino")
    ov_model, images, expected = convert(model, meta)
    ov = _openvino()
    config = COMPILE_CONFIGS[precision]
    meta = {**meta, "precision": precision, "compile_config": config}
    if verify and precision != "f32":  # the conversion, before the precision changes
        compiled = ov.Core().compile_model(ov_model, "CPU", COMPILE_CONFIG)
        deploy.verify_scores("OpenVINO", compiled(images)[compiled.outputs[0]], expected)
    scores = None
    if precision != "f32":
        calib, val_images, val_labels, which = measured
        with deploy.frozen(model):
            reference = run_batched(deploy.scores_function(model, meta), val_images)
        extra = {}
        if precision == "int8":
            ov_model, islands = quantize_int8(ov_model, calib, float_islands)
            extra = {"calibration_images": int(len(calib)), "float_islands": islands}
        compiled = ov.Core().compile_model(ov_model, "CPU", config)
        request = compiled.create_infer_request()
        scores = run_batched(lambda b: request.infer({deploy.INPUT_NAME: b})[
            deploy.OUTPUT_NAME].copy(), val_images)
        # what the CPU plugin actually ran: it keeps f32, silently, where oneDNN has no
        # bf16 path (x86 without AVX-512 / AVX2-VNNI-2), whatever the hint says
        ran = compiled.get_property("INFERENCE_PRECISION_HINT")
        extra["compiled_inference_precision"] = ran.to_string() if hasattr(ran, "to_string") \
            else str(ran)
        extra["compile_config"] = config
        figures = accuracy_figures(precision, "openvino", val_labels, reference, scores,
                                   meta["thresholds"], max_map_drop, which, extra)
        check_drop(figures, "export_openvino")
        meta["accuracy"] = figures
    ov_model.set_rt_info(precision, ["keras_mld", "precision"])
    ov_model.set_rt_info(json.dumps(config), ["keras_mld", "compile_config"])
    if "accuracy" in meta:
        ov_model.set_rt_info(json.dumps(meta["accuracy"]), ["keras_mld", "accuracy"])

    def write(tmp):
        ov.save_model(ov_model, os.path.join(tmp, XML), compress_to_fp16=False)
        with open(os.path.join(tmp, "keras_mld.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1, ensure_ascii=False)
        if verify or scores is not None:  # the files as written, compiled as they say
            compiled = ov.Core().compile_model(os.path.join(tmp, XML), "CPU", config)
            if scores is None:
                deploy.verify_scores("OpenVINO", compiled(images)[compiled.outputs[0]],
                                     expected)
            else:  # the measured model: the same scores on the first validation batch
                first = scores[:EVAL_BATCH]
                got = compiled(measured[1][:len(first)])[compiled.outputs[0]]
                if not np.allclose(got, first, rtol=0.0, atol=1e-6):
                    raise RuntimeError(f"export_openvino: the written {precision} IR does not "
                                       "give the scores it was measured with; the export was "
                                       "not written")

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
        plain = ("format", "task", "input", "output", "precision")
        out[key] = value if key in plain else parse_json(
            value, f"read_metadata: OpenVINO rt_info keras_mld.{key}", finite=False)
    return out
