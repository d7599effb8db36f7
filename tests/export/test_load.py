"""Serving under load (``benchmarks/serving_load.py``, ``serve`` mode): one SavedModel in a
fresh TensorFlow-only process, 4 client threads x 10 requests of JPEG/PNG batches with
garbage, decompression bombs and an over-sized batch mixed in. Every good request gets
exactly its single-request scores (which equal Keras on the same decoded pixels), every bad
one the error it gets alone, the process lives to report, and its RSS stays under 1 GiB.
"""
import numpy as np
import pytest
import tensorflow as tf

from keras_mld.export import export_saved_model
from tests.export.test_limits import old_decode, sl, tiny_model

pytestmark = pytest.mark.tf_only

CLIENTS, REQUESTS = 4, 10


def test_concurrent_clients_get_single_request_answers(tmp_path):
    import keras

    keras.utils.set_random_seed(1)
    model = tiny_model()
    path = export_saved_model(model, tmp_path / "m", ["a", "b", "c", "d"], max_batch_size=4)
    requests, kinds = sl.request_mix(seed=0, good=12, max_batch_size=4)
    report = sl.run_serve_job({"export_dir": path, "requests": requests, "clients": [CLIENTS],
                               "requests_per_client": REQUESTS}, str(tmp_path), timeout=600)
    assert report["imported_blocked_modules"] == []
    # single requests: good ones equal Keras on the previously used decode path
    for request, kind, res in zip(requests, kinds, report["single"]):
        if kind == "good":
            assert res["error"] is None, res
            ref = tf.sigmoid(model(np.stack([old_decode(b, (32, 32)) for b in request])))
            np.testing.assert_allclose(np.asarray(res["scores"]), ref.numpy(), atol=1e-5,
                                       rtol=0)
        else:
            assert res["error"] == "InvalidArgumentError", (kind, res)
            expected = {"bomb": "exceeds max_image_pixels=40000000",
                        "batch": "request of 5 images exceeds max_batch_size=4",
                        "garbage": ""}[kind]
            assert expected in res["message"], (kind, res["message"])
    run, = report["runs"]
    assert run["requests"] == CLIENTS * REQUESTS
    assert run["good"] > 0 and run["bad"] > 0 and run["good"] + run["bad"] == run["requests"]
    assert run["mismatched"] == [] and run["wrong_errors"] == []
    # VmHWM, not ru_maxrss (which Linux carries over from this big pytest parent)
    assert run["peak_rss_bytes"] < 2 ** 30 and report["rss"]["peak_bytes"] < 2 ** 30
