"""TF Serving warm-up file: assets.extra/tf_serving_warmup_requests (docs/serving.md)."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from keras_mld.data.image import decode_and_resize
from keras_mld.export import export_saved_model, read_warmup_requests, warmup_inputs
from keras_mld.export.warmup import WARMUP_DIR, WARMUP_FILENAME, build_warmup_requests

pytestmark = pytest.mark.tf_only

LABELS = ["a", "b", "c", "d"]


def _model(size=(20, 24)):
    images = keras.Input(size + (3,), name="images")
    x = keras.layers.Rescaling(1.0 / 255.0)(images)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Identity(name="multilabel_logits")(keras.layers.Dense(len(LABELS))(x))
    return keras.Model(images, logits)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    keras.utils.set_random_seed(3)
    model = _model()
    path = export_saved_model(model, tmp_path_factory.mktemp("w") / "digits", LABELS)
    return model, path


def test_warmup_file_is_tfrecord_of_prediction_logs(export):
    _, path = export
    file = os.path.join(path, WARMUP_DIR, WARMUP_FILENAME)
    raw = [r.numpy() for r in tf.data.TFRecordDataset(file)]
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in raw]
    assert len(logs) == 2
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log", "predict_log"]
    requests = [log.predict_log.request for log in logs]
    assert [r.model_spec.signature_name for r in requests] == ["serving_default",
                                                               "predict_images"]
    assert all(r.model_spec.name == "digits" for r in requests)
    assert [list(r.inputs) for r in requests] == [["images"], ["image_bytes"]]
    assert [log.SerializeToString() for log in read_warmup_requests(path)] == raw


def test_warmup_requests_run_against_the_loaded_model(export):
    model, path = export
    loaded = tf.saved_model.load(path)
    seen = set()
    for log in read_warmup_requests(path):
        signature, inputs = warmup_inputs(log)
        fn = loaded.signatures[signature]
        _, expected_inputs = fn.structured_input_signature
        assert set(inputs) == set(expected_inputs)
        for name, value in inputs.items():  # dtype and shape the signature accepts
            assert expected_inputs[name].is_compatible_with(tf.constant(value))
        out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        if signature == "serving_default":
            images = inputs["images"]
            assert images.shape == (1, 20, 24, 3) and images.dtype == np.float32
            assert 0 <= images.min() and images.max() <= 255 and images.std() > 10
        else:
            blobs = list(inputs["image_bytes"])
            assert len(blobs) == 2 and tf.io.is_jpeg(blobs[1]) and blobs[0][:4] == b"\x89PNG"
            images = np.stack([decode_and_resize(b, (20, 24)).numpy() for b in blobs])
        ref = tf.sigmoid(model(images, training=False)).numpy()
        np.testing.assert_allclose(out["scores"].numpy(), ref, atol=1e-5, rtol=0)
        seen.add(signature)
    assert seen == {"serving_default", "predict_images"}


def test_build_warmup_requests_rejects_unknown_signature():
    with pytest.raises(ValueError, match="no warm-up request for signature 'metadata'"):
        build_warmup_requests((8, 8), signatures=("metadata",))
