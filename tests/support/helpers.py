"""Backend-agnostic helpers for tests (TensorFlow and JAX)."""
import keras
import numpy as np


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def grad_wrt_inputs(fn, *arrays):
    """Gradients of scalar ``fn(*tensors)`` w.r.t. each numpy array, as numpy."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xs = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            for x in xs:
                tape.watch(x)
            out = fn(*xs)
        return [to_np(g) for g in tape.gradient(out, xs)]
    if backend == "jax":
        import jax

        gs = jax.grad(lambda *a: fn(*a), argnums=tuple(range(len(arrays))))(
            *[jax.numpy.asarray(a) for a in arrays])
        return [to_np(g) for g in gs]
    raise NotImplementedError(backend)


def grad_wrt_variables(fn, variables):
    """Gradients of scalar ``fn()`` (reading ``variables``) w.r.t. each variable, as numpy.

    ``None`` where the variable does not influence ``fn``.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            out = fn()
        grads = tape.gradient(out, [v.value for v in variables])
        return [None if g is None else to_np(g) for g in grads]
    if backend == "jax":
        import jax

        def pure(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn()

        grads = jax.grad(pure)([v.value for v in variables])
        return [to_np(g) for g in grads]
    raise NotImplementedError(backend)
