"""Sharpness-aware minimisation (SAM, Foret et al. 2021) as a Keras training wrapper.

Foret et al. (arXiv:2010.01412), as used by Prokofiev & Sovrasov (arXiv:2209.06585) section 3.5:
SAM with ``rho = 0.05``
is the default optimiser of the training strategy. One SAM step::

    g  = grad L(w)                        (first pass, at the current weights)
    e  = rho * g / (||g|| + eps)          (||.|| = global L2 norm over all trainable variables)
    g' = grad L(w + e)                    (second pass, at the perturbed weights)
    optimizer.apply(g', w)                (w itself is never modified by the perturbation)

Packaging: :class:`SAMModel` is a ``keras.Model`` that *wraps* an already built model and
overrides ``train_step`` only. The wrapped model (``sam.inner_model``) stays a plain
functional model: save / export that one (``sam.inner_model.save("m.keras")``); the wrapper
shares its variables, so training the wrapper trains it.

Implementation notes (TensorFlow backend; on JAX the same step is written statelessly
with ``jax.value_and_grad`` over the trainer's ``compute_loss_and_updates``, without the
``tf.distribute`` handling):

- The second pass runs inside a ``keras.StatelessScope`` that maps every trainable
  variable to the tensor ``w + e``; gradients are taken w.r.t. those tensors. The weights
  are therefore never assigned ``w + e`` and "restored": the restore is exact by
  construction, no ``(w + e) - e`` round-off, and no variable write happens in replica
  context. Variable writes made during the second pass (BatchNorm moving statistics,
  metric and seed-generator states) are recorded by the scope and discarded, so the
  moving statistics are updated once per step (by the first pass), as in a plain step.
  ``second_pass_state=True`` keeps them instead: the state variables of the model
  (BatchNorm moving statistics) are then updated by both passes, one after the other, as
  in deep-object-reid's SAM loop (Prokofiev & Sovrasov's released code runs both forward
  passes in training mode).
- ``model.compile(..., jit_compile=True)`` works: everything is traced TensorFlow.
- ``tf.distribute`` (e.g. ``MirroredStrategy``): Keras scales each replica's loss by
  ``1 / num_replicas``. The first-pass gradients are all-reduced (SUM) across replicas
  *before* the norm is taken, so ``e`` is computed from the gradient of the global-batch
  loss and is identical on every replica (this differs from the per-replica
  "m-sharpness" perturbation of the SAM paper). The second-pass gradients stay
  per-replica and are handed to the optimizer **once**; the optimizer all-reduces them
  as in any Keras step. With ``R`` replicas and the same global batch the update therefore
  equals the single-device SAM update (up to float summation order).
- Mixed precision (``LossScaleOptimizer``): both passes use the scaled loss; ``e`` is
  invariant to the loss scale; a non-finite first-pass gradient makes ``g'`` non-finite,
  so the loss-scale optimizer skips the step as usual.
- Dropout draws new masks in the second pass (as PyTorch SAM implementations do).
- Logged ``loss`` and compiled metrics are those of the first pass (at ``w``).
"""
import keras
import tensorflow as tf
from keras.src.losses import loss as _keras_loss_module

__all__ = ["SAMModel", "sam_gradients"]


def _global_norm(grads):
    sq = [tf.reduce_sum(tf.square(tf.cast(g, tf.float32))) for g in grads if g is not None]
    if not sq:
        return tf.constant(0.0, tf.float32)
    return tf.sqrt(tf.add_n(sq))


def _all_reduce_sum(grads):
    """All-reduce (SUM) the non-None gradients across replicas; identity without a strategy."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return list(grads)
    present = [g for g in grads if g is not None]
    reduced = iter(ctx.all_reduce(tf.distribute.ReduceOp.SUM, present)) if present else iter(())
    return [None if g is None else next(reduced) for g in grads]


def sam_gradients(loss_fn, variables, rho=0.05, eps=1e-12, state_variables=()):
    """The SAM gradient ``g' = grad L(w + e)`` of ``loss_fn()`` w.r.t. ``variables``.

    ``loss_fn`` is a zero-argument callable computing the (scaled) scalar loss from the
    current values of ``variables`` (e.g. ``lambda: loss(y, model(x, training=True))``).
    Returns ``(loss_at_w, sam_grads)``. The first-pass gradient is all-reduced across
    replicas when called in a ``tf.distribute`` replica context (see module docstring).
    ``state_variables``: non-trainable variables whose second-pass writes are kept
    (assigned after the pass); the writes to any other variable are discarded.
    """
    variables = list(variables)
    with tf.GradientTape() as tape:
        loss = loss_fn()
    grads = tape.gradient(loss, variables)
    grads = _all_reduce_sum(grads)
    scale = tf.cast(rho, tf.float32) / (_global_norm(grads) + tf.cast(eps, tf.float32))
    perturbed = []
    for v, g in zip(variables, grads):
        w = tf.convert_to_tensor(v.value)
        if g is not None:
            w = w + tf.cast(tf.cast(g, tf.float32) * scale, w.dtype)
        perturbed.append(w)
    with tf.GradientTape() as tape2:
        tape2.watch(perturbed)
        with keras.StatelessScope(state_mapping=list(zip(variables, perturbed)),
                                  collect_losses=True) as scope:
            loss2 = loss_fn()
        kept = [(v, scope.get_current_value(v)) for v in state_variables]
    grads2 = tape2.gradient(loss2, perturbed)
    for v, value in kept:
        if value is not None:
            v.assign(value)
    return loss, grads2


@keras.saving.register_keras_serializable(package="keras_mld")
class SAMModel(keras.Model):
    """Wraps a built model so that ``fit`` takes SAM steps (Foret et al. (arXiv:2010.01412),
    Algorithm 1).

    Args:
        model: a built ``keras.Model`` (typically functional); stays savable/exportable
            as-is and is available as ``inner_model``.
        rho: SAM neighbourhood radius (paper: 0.05), must be > 0.
        eps: added to the gradient norm (0 gradient gives a 0 perturbation).
        second_pass_state: False (default): the second pass updates no state (BatchNorm
            moving statistics move once per step); True: the inner model's non-trainable
            variables keep the second pass's writes too (deep-object-reid's loop).

    Use like the wrapped model: ``sam = SAMModel(model); sam.compile(optimizer, loss,
    metrics, jit_compile=True); sam.fit(...)``; then ``model.save(...)`` /
    ``export_saved_model(model, ...)`` on the *inner* model.
    """

    def __init__(self, model, rho=0.05, eps=1e-12, second_pass_state=False, **kwargs):
        if not isinstance(model, keras.Model):
            raise ValueError(f"SAMModel: model must be a keras.Model, got {type(model).__name__}")
        if not isinstance(rho, (int, float)) or isinstance(rho, bool) or not rho > 0:
            raise ValueError(f"SAMModel: rho must be a float > 0, got {rho!r}")
        if not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"SAMModel: eps must be a float >= 0, got {eps!r}")
        if not isinstance(second_pass_state, bool):
            raise ValueError("SAMModel: second_pass_state must be True or False, got "
                             f"{second_pass_state!r}")
        kwargs.setdefault("name", f"sam_{model.name}")
        super().__init__(**kwargs)
        self.inner_model = model
        self.rho = float(rho)
        self.eps = float(eps)
        self.second_pass_state = second_pass_state
        if model.built:
            self.built = True

    def call(self, inputs, training=None):
        return self.inner_model(inputs, training=training)

    def build(self, input_shape):
        if not self.inner_model.built:
            self.inner_model.build(input_shape)
        self.built = True

    def train_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_train_step(*args)
        return self._tf_train_step(*args)

    def _jax_train_step(self, state, data):
        """The same SAM step, stateless, for the JAX trainer (``compute_loss_and_updates``
        twice: at ``w`` and at ``w + e``; the optimizer applies the second gradient at ``w``;
        the second pass's non-trainable updates are kept only with ``second_pass_state``;
        logged loss and metrics are the first pass's)."""
        import jax
        import jax.numpy as jnp

        trainable, non_trainable, optimizer_vars, metrics_vars = state
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
        (_, aux), grads = grad_fn(trainable, non_trainable, metrics_vars, x, y, sample_weight,
                                  training=True, optimizer_variables=optimizer_vars)
        unscaled_loss, y_pred, non_trainable, metrics_vars = aux
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype("float32"))) for g in grads))
        scale = self.rho / (norm + self.eps)
        perturbed = [w + (g.astype("float32") * scale).astype(w.dtype)
                     for w, g in zip(trainable, grads)]
        (_, aux2), grads2 = grad_fn(perturbed, non_trainable, metrics_vars, x, y, sample_weight,
                                    training=True, optimizer_variables=optimizer_vars)
        if self.second_pass_state:
            non_trainable = aux2[2]
        trainable, optimizer_vars = self.optimizer.stateless_apply(optimizer_vars, grads2,
                                                                   trainable)
        logs, metrics_vars = self._update_metrics_variables(metrics_vars, unscaled_loss, x, y,
                                                            y_pred, sample_weight)
        return logs, (trainable, non_trainable, optimizer_vars, metrics_vars)

    def _tf_train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch = tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]
        first = {}

        def loss_fn():
            y_pred = self(x, training=True)
            loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                      training=True)
            if not first:  # first pass (at w): keep prediction and unscaled loss for logs
                first["y_pred"], first["loss"] = y_pred, loss
            return self.optimizer.scale_loss(loss) if self.optimizer is not None else loss

        tvars = self.trainable_variables
        state = self.inner_model.non_trainable_variables if self.second_pass_state else ()
        _, grads = sam_gradients(loss_fn, tvars, rho=self.rho, eps=self.eps,
                                 state_variables=state)
        self._loss_tracker.update_state(
            _keras_loss_module.unscale_loss_for_distribution(first["loss"]), sample_weight=batch)
        self.optimizer.apply(grads, tvars)
        return self.compute_metrics(x, y, first["y_pred"], sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update({"model": keras.saving.serialize_keras_object(self.inner_model),
                       "rho": self.rho, "eps": self.eps,
                       "second_pass_state": self.second_pass_state})
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"),
                                                      custom_objects=custom_objects)
        for key in ("trainable", "dtype"):
            config.pop(key, None)
        return cls(model, **config)
