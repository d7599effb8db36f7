"""Run exported SavedModels in a fresh interpreter where only TensorFlow can be imported.

Usage: ``python tf_only_runner.py job.json`` (driven by ``test_saved_model.py``).

``keras``, ``keras_mld``, ``tf_keras``, ``tensorflow_text``, ``keras_hub`` and ``keras_cv``
are made unimportable *before* ``import tensorflow`` (``sys.modules[name] = None``; TF's own
optional eager ``import keras`` then fails quietly), so loading and running an export here
proves that its graph needs only core TensorFlow. For every case the job lists, every
signature is called with the inputs the job gives (float arrays in an ``.npz``, string
inputs as base64 in the JSON); outputs go to an ``.npz`` (strings as unicode arrays) and a
report (signature names, graph op types, op types not registered in this process, and the
blocked modules that got imported anyway) to ``job["report"]``.
"""
import base64
import json
import sys

BLOCKED = ("keras", "keras_mld", "tf_keras", "tensorflow_text", "keras_hub", "keras_cv")
np = tf = saved_model_pb2 = op_def_registry = None  # imported by main(), after the blocking


def _block_and_import():
    """Never at import time: importing this file from pytest must not break keras there."""
    global np, tf, saved_model_pb2, op_def_registry
    for name in BLOCKED:
        sys.modules[name] = None
    import numpy
    import tensorflow
    from tensorflow.core.protobuf import saved_model_pb2 as proto_module
    from tensorflow.python.framework import op_def_registry as registry

    np, tf, saved_model_pb2, op_def_registry = numpy, tensorflow, proto_module, registry


def graph_ops(export_dir):
    proto = saved_model_pb2.SavedModel()
    with open(f"{export_dir}/saved_model.pb", "rb") as f:
        proto.ParseFromString(f.read())
    ops = set()
    for meta_graph in proto.meta_graphs:
        graph = meta_graph.graph_def
        ops.update(node.op for node in graph.node)
        for function in graph.library.function:
            ops.update(node.op for node in function.node_def)
    return sorted(ops)


def to_numpy(tensor):
    value = np.asarray(tensor.numpy())
    if tensor.dtype == tf.string:
        return np.vectorize(lambda b: b.decode("utf-8"), otypes=[str])(value) \
            if value.size else value.astype(str)
    return value


def run_case(case):
    loaded = tf.saved_model.load(case["export_dir"])
    arrays = dict(np.load(case["inputs"], allow_pickle=False))
    strings = {k: [base64.b64decode(s) for s in v] for k, v in case["string_inputs"].items()}
    outputs = {}
    for sig_name, fn in loaded.signatures.items():
        _, kwargs_spec = fn.structured_input_signature
        feeds = {}
        for input_name, spec in kwargs_spec.items():
            key = f"{sig_name}/{input_name}"
            feeds[input_name] = tf.constant(strings[key] if spec.dtype == tf.string
                                            else arrays[key], dtype=spec.dtype)
        for out_name, tensor in fn(**feeds).items():
            outputs[f"{sig_name}/{out_name}"] = to_numpy(tensor)
    np.savez(case["outputs"], **outputs)
    ops = graph_ops(case["export_dir"])
    return {"signatures": sorted(loaded.signatures.keys()), "ops": ops,
            "unregistered_ops": [op for op in ops if op_def_registry.get(op) is None],
            "labels_variable": [s.decode("utf-8") for s in loaded.labels.numpy()]}


def main(job_path):
    _block_and_import()
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    report = {"cases": {}, "errors": {}}
    for case in job["cases"]:
        try:
            report["cases"][case["id"]] = run_case(case)
        except Exception as e:  # reported per case, the test re-raises it
            report["errors"][case["id"]] = f"{type(e).__name__}: {e}"
    report["imported_blocked_modules"] = sorted(
        m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in BLOCKED)
    with open(job["report"], "w", encoding="utf-8") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1])
