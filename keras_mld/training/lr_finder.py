"""Learning-rate range test (Smith 2017; "initial learning rate
estimation" of Prokofiev & Sovrasov (arXiv:2209.06585) section 3.5).

:func:`lr_range_test` trains for ``num_steps`` batches while the learning rate grows
geometrically from ``min_lr`` to ``max_lr``, records the loss of every step, and restores
the model's variables (all of them, BatchNorm statistics included) afterwards. The
model's own optimizer is never touched: the test uses a fresh optimizer of the same
class and configuration, with a constant learning rate that is set before each step.

Suggested learning rate: the learning rate at the steepest descent of the smoothed loss
curve (exponential smoothing ``beta = 0.98`` with bias correction, as fastai's finder),
looked for before the loss minimum; the test stops early once the smoothed loss exceeds
``diverge_factor`` times its minimum.
"""
import math

import keras
import numpy as np
import tensorflow as tf

__all__ = ["lr_range_test"]


def _make_optimizer(model, optimizer, lr):
    if optimizer is None:
        base = getattr(model, "optimizer", None)
        base = getattr(base, "inner_optimizer", base)  # unwrap a LossScaleOptimizer
        if base is None:
            return keras.optimizers.SGD(learning_rate=lr, momentum=0.9)
        config = base.get_config()
        config["learning_rate"] = lr
        config.pop("use_ema", None)
        return base.__class__.from_config(config)
    if isinstance(optimizer, str):
        return keras.optimizers.get({"class_name": optimizer,
                                     "config": {"learning_rate": lr}})
    return optimizer


def _resolve_loss(model, loss):
    loss = loss if loss is not None else getattr(model, "loss", None)
    if loss is None:
        raise ValueError("lr_range_test: loss is required when the model is not compiled")
    loss = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss
    if isinstance(loss, keras.losses.Loss):
        return loss
    fn = loss

    def mean_loss(y_true, y_pred, sample_weight=None):
        values = fn(y_true, y_pred)
        if sample_weight is not None:
            values = values * tf.cast(sample_weight, values.dtype)
        return tf.reduce_mean(values)

    return mean_loss


def lr_range_test(model, dataset, min_lr=1e-7, max_lr=1.0, num_steps=100, loss=None,
                  optimizer=None, beta=0.98, diverge_factor=4.0):
    """Run the range test and restore ``model``; returns ``(lrs, losses, suggested_lr)``.

    Args:
        model: a built ``keras.Model`` (e.g. the inner model; a compiled one provides
            ``loss`` and the optimizer class).
        dataset: iterable of ``(x, y)`` or ``(x, y, sample_weight)`` batches (a
            ``tf.data.Dataset`` is repeated as needed).
        min_lr, max_lr: range (0 < min_lr < max_lr); ``lr_i = min_lr * (max_lr /
            min_lr) ** (i / (num_steps - 1))``.
        num_steps: number of training steps (>= 2).
        loss: loss (default: the model's compiled loss).
        optimizer: optimizer instance or name (default: the model's optimizer class and
            config, else SGD with momentum 0.9); its state is discarded.
    Returns:
        ``lrs`` (increasing, numpy float64), raw per-step ``losses`` (same length; shorter
        than ``num_steps`` if the loss diverged) and the suggested learning rate.
    """
    if not (isinstance(min_lr, (int, float)) and isinstance(max_lr, (int, float))
            and 0 < min_lr < max_lr):
        raise ValueError(f"lr_range_test: need 0 < min_lr < max_lr, got min_lr={min_lr!r}, "
                         f"max_lr={max_lr!r}")
    if not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"lr_range_test: num_steps must be an int >= 2, got {num_steps!r}")
    model = getattr(model, "inner_model", model)
    loss_fn = _resolve_loss(model, loss)
    opt = _make_optimizer(model, optimizer, float(min_lr))
    saved = [np.array(keras.ops.convert_to_numpy(v)) for v in model.variables]
    variables = model.trainable_variables
    opt.build(variables)

    @tf.function
    def step(x, y, sw):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            value = loss_fn(y, y_pred, sample_weight=sw)
            if model.losses:
                value = value + tf.add_n([tf.cast(v, value.dtype) for v in model.losses])
        grads = tape.gradient(value, variables)
        opt.apply(grads, variables)
        return value

    if isinstance(dataset, tf.data.Dataset):
        dataset = dataset.repeat()
    ratio = math.log(max_lr / min_lr) / (num_steps - 1)
    lrs, losses, smooth = [], [], []
    avg, best = 0.0, math.inf
    try:
        it = iter(dataset)
        for i in range(num_steps):
            batch = next(it)
            x, y, sw = keras.utils.unpack_x_y_sample_weight(tuple(batch))
            lr = min_lr * math.exp(ratio * i)
            opt.learning_rate = lr
            value = float(step(x, y, sw))
            lrs.append(lr)
            losses.append(value)
            if not math.isfinite(value):
                break
            avg = beta * avg + (1 - beta) * value
            s = avg / (1 - beta ** (i + 1))
            smooth.append(s)
            best = min(best, s)
            if s > diverge_factor * best and i > 0:
                break
    finally:
        for v, a in zip(model.variables, saved):
            v.assign(a)
    return np.asarray(lrs, np.float64), np.asarray(losses, np.float64), _suggest(lrs, smooth)


def _suggest(lrs, smooth):
    """LR at the steepest descent of the smoothed loss (before its minimum)."""
    n = len(smooth)
    if n < 3:
        return float(lrs[0])
    s = np.asarray(smooth)
    stop = max(int(np.argmin(s)), 2)
    grads = np.gradient(s[:stop + 1], np.log(np.asarray(lrs[:stop + 1])))
    return float(lrs[int(np.argmin(grads))])
