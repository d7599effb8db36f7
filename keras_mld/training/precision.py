"""Mixed precision of a recipe (the ``mixed_precision`` key of :func:`keras_mld.training.fit`):
which Keras dtype policy a recipe asks for, a context to build the model under it, and the
check that a model about to be trained was built so.

The official loops train under ``torch.autocast`` + ``GradScaler`` on a GPU; the Keras
equivalent is the ``mixed_float16`` policy with a ``LossScaleOptimizer`` (dynamic loss
scaling), which :func:`keras_mld.training.fit` wraps around the recipe's optimizer.
"""
import contextlib

import keras
import tensorflow as tf

__all__ = ["MIXED_PRECISION", "check_policy", "mixed_precision_scope",
           "resolve_mixed_precision"]

MIXED_PRECISION = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def resolve_mixed_precision(value):
    """``mixed_precision`` of a recipe -> a Keras dtype policy name, or None.

    ``None``: nothing imposed (the model's policy as built). ``"auto"``: ``mixed_float16``
    where TensorFlow sees a GPU (float16 compute, float32 weights, dynamic loss scaling:
    the official loops' ``autocast`` + ``GradScaler``), ``float32`` on a CPU (float16 is
    slower there). ``"float32"``, ``"mixed_float16"``, ``"mixed_bfloat16"``: that policy.
    """
    if value is None:
        return None
    if value not in MIXED_PRECISION:
        raise ValueError(f"fit: mixed_precision must be None or one of {MIXED_PRECISION}, "
                         f"got {value!r}")
    if value == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    return value


@contextlib.contextmanager
def mixed_precision_scope(recipe):
    """Builds inside this context get the dtype policy of ``recipe``'s ``mixed_precision``
    (a train section or its value; the global policy is restored on exit). A layer's
    policy is fixed when it is created, so the model that :func:`fit` trains with a
    ``mixed_precision`` recipe must be built inside it (``keras-mld train`` does)."""
    value = recipe.get("mixed_precision") if isinstance(recipe, dict) else recipe
    policy = resolve_mixed_precision(value)
    previous = keras.config.dtype_policy()
    if policy is not None:
        keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)


def check_policy(model, policy):
    """The model's layers must compute in the recipe's dtype (fixed when they were built):
    under a mixed policy some layers compute in it (others, e.g. the logits, may stay
    float32), under float32 all of them."""
    if policy is None:
        return
    want = keras.dtype_policies.get(policy).compute_dtype
    layers = model._flatten_layers(include_self=False) if hasattr(model, "_flatten_layers") \
        else []
    computing = sorted({layer.compute_dtype for layer in layers if layer.weights})
    if computing and (want not in computing if want != "float32" else computing != [want]):
        raise ValueError(f"fit: the recipe's mixed_precision resolves to {policy!r}, but the "
                         f"model's layers compute in {computing}; build the model inside "
                         f"keras_mld.training.mixed_precision_scope(recipe) (a layer's dtype "
                         f"policy is fixed when it is created)")
