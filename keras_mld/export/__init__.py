"""Export for TF Serving (see docs/serving.md). TensorFlow backend only.

``export_saved_model(model, base_dir, ...)`` (class names, thresholds, task and image size
from a :class:`keras_mld.ImageClassifier`, arguments override) writes ``base_dir/<version>/`` (a
SavedModel with the ``serving_default``, ``predict_images`` and ``metadata`` signatures, the
class names and thresholds, and a warm-up file) plus an example ``base_dir/models.config``.
See the README section "Serving with TensorFlow Serving".

``export_onnx(model, "model.onnx")`` (ONNX Runtime) and
``export_openvino(model, "model_ov")`` (OpenVINO IR) write the same model (pixels in
[0, 255] in, probabilities out, dynamic batch, class names and thresholds in the metadata);
they need the ``deploy`` extra (tf2onnx, onnx, onnxruntime, openvino), imported on first
call. See the README section "Deployment".
"""
from keras_mld.export.onnx import export_onnx  # noqa: F401  (tf2onnx imported on call)
from keras_mld.export.openvino import export_openvino  # noqa: F401  (openvino imported on call)
from keras_mld.export.saved_model import (  # noqa: F401
    SIGNATURES,
    export_saved_model,
    models_config_text,
)
from keras_mld.export.warmup import (  # noqa: F401
    WARMUP_FILENAME,
    build_warmup_requests,
    read_warmup_requests,
    warmup_inputs,
    write_warmup_requests,
)
from keras_mld.export.zero_shot import export_zero_shot_saved_model  # noqa: F401


__all__ = ["export_saved_model", "models_config_text", "SIGNATURES", "WARMUP_FILENAME",
           "build_warmup_requests", "write_warmup_requests", "read_warmup_requests",
           "warmup_inputs", "export_zero_shot_saved_model", "export_onnx", "export_openvino"]
