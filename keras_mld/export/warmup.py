"""TF Serving warm-up requests (see docs/serving.md).

TF Serving replays ``<version>/assets.extra/tf_serving_warmup_requests`` -- a TFRecord
file of ``tensorflow.serving.PredictionLog`` protos -- before it marks a version
available, so the first real request does not pay for graph initialisation. Each
record here is one ``PredictRequest`` with ``model_spec.signature_name`` set:

- ``serving_default``: ``images`` float32 ``[1, H, W, 3]`` (a generated colour gradient);
- ``predict_images``: ``image_bytes`` string ``[2]``, one PNG and one JPEG of other sizes
  (exercises decode, resize and the mixed-format batch path).

The protos come from ``tensorflow-serving-api`` (``pip install keras-mld[serving]``).
"""
import os

import numpy as np
import tensorflow as tf

WARMUP_DIR = "assets.extra"
WARMUP_FILENAME = "tf_serving_warmup_requests"
DEFAULT_SIGNATURES = ("serving_default", "predict_images")


def serving_apis():
    """``(predict_pb2, prediction_log_pb2)`` of tensorflow-serving-api (a clear error without it)."""
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "keras_mld.export needs tensorflow-serving-api for the warm-up file: "
            "pip install 'keras-mld[serving]' (tensorflow-serving-api>=2.21,<2.22)") from e
    return predict_pb2, prediction_log_pb2


def sample_image(height, width, seed=0):
    """A deterministic RGB uint8 ``[height, width, 3]`` image (gradients plus a little noise)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 255.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 255.0, width, dtype=np.float32)[None, :]
    image = np.stack([np.broadcast_to(y, (height, width)),
                      np.broadcast_to(x, (height, width)),
                      np.broadcast_to(255.0 - (x + y) / 2.0, (height, width))], axis=-1)
    image = image + rng.uniform(-8.0, 8.0, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode_image(image, fmt="png"):
    """uint8 ``[H, W, 3]`` array -> encoded ``bytes`` (``fmt`` in ``png`` | ``jpeg``)."""
    if fmt == "png":
        return tf.io.encode_png(image).numpy()
    if fmt == "jpeg":
        return tf.io.encode_jpeg(image, quality=90).numpy()
    raise ValueError(f"encode_image: fmt must be 'png' or 'jpeg', got {fmt!r}")


def build_warmup_requests(image_size, model_name="model", signatures=DEFAULT_SIGNATURES):
    """``PredictionLog`` protos, one predict request per signature in ``signatures``.

    ``image_size`` is the model's ``(H, W)``; ``model_name`` only fills ``model_spec.name``
    (TF Serving ignores it during warm-up).
    """
    predict_pb2, prediction_log_pb2 = serving_apis()
    height, width = (int(s) for s in image_size)
    logs = []
    for signature in signatures:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        if signature == "serving_default":
            images = sample_image(height, width, seed=1).astype(np.float32)[None]
            request.inputs["images"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.float32))
        elif signature == "predict_images":
            blobs = [encode_image(sample_image(48, 64, seed=2), "png"),
                     encode_image(sample_image(64, 40, seed=3), "jpeg")]
            request.inputs["image_bytes"].CopyFrom(
                tf.make_tensor_proto(blobs, dtype=tf.string, shape=[len(blobs)]))
        else:
            raise ValueError(f"build_warmup_requests: no warm-up request for signature "
                             f"{signature!r}; accepted: {DEFAULT_SIGNATURES}")
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup_requests(export_dir, image_size, model_name="model",
                          signatures=DEFAULT_SIGNATURES):
    """Write ``export_dir/assets.extra/tf_serving_warmup_requests``; returns its path."""
    logs = build_warmup_requests(image_size, model_name=model_name, signatures=signatures)
    directory = os.path.join(export_dir, WARMUP_DIR)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, WARMUP_FILENAME)
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(path):
    """Parse a warm-up file (or a version directory holding one) into ``PredictionLog`` protos."""
    _, prediction_log_pb2 = serving_apis()
    if os.path.isdir(path):
        path = os.path.join(path, WARMUP_DIR, WARMUP_FILENAME)
    return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(path)]


def warmup_inputs(prediction_log):
    """``(signature_name, {input name: numpy array})`` of a predict-log record."""
    request = prediction_log.predict_log.request
    inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
    return request.model_spec.signature_name or "serving_default", inputs
