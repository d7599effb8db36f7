"""What every step-by-step comparison with an official training loop shares: its fixture
(``tests/fixtures/train_<name>.npz``, written by ``scripts/make_official_*training*``), the
per-step loss and lr record, and the weight comparison with its two documented exceptions.

The comparison (:func:`assert_update_close`): each trained variable within 1e-3 of the size
of the official update (``max |w_official - w_init|``) plus 2 float32 ulps of the weights;

- BatchNorm moving variances after one correction: PyTorch keeps the *unbiased* batch
  variance (``n / (n - 1)``, ``n = B * H * W``), Keras the biased one. Both start at 1 and
  average the same batch variances, so ``torch - c = n / (n - 1) * (keras - c)`` exactly,
  with ``c`` what the initial 1 has become (:func:`initial_variance_left`);
- the attention *key* biases, whose exact gradient is 0 (softmax is invariant to them): Adam
  turns their float-noise gradients (~1e-10) into steps of ~lr on both sides, differently;
  they change no output, so they are only checked to stay within ``steps * max_lr`` (plus
  any decay) of their start.
"""
import json

import keras
import numpy as np

from tests.support.official import FIXTURES


def load_training_fixture(name, kinds):
    """``(config, arrays, {kind: state dict})`` of ``train_<name>.npz``; a state's keys lose
    the ``<kind>/`` prefix and DDP's ``module.``."""
    with np.load(FIXTURES / f"train_{name}.npz") as z:
        data = {k: z[k] for k in z.files}
    config = json.loads(str(data.pop("config")))
    states = {kind: {k[len(kind) + 1:].removeprefix("module."): v for k, v in data.items()
                     if k.startswith(kind + "/")} for kind in kinds}
    return config, data, states


def float_values(model):
    """``{variable path: numpy value}`` of the model's float variables."""
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.variables
            if "float" in str(v.dtype)}


def zero_gradient(path):
    """The attention key biases: softmax ignores them."""
    return "key" in path and path.endswith("bias")


class StopAfter(keras.callbacks.Callback):
    """Stops training after ``epochs`` epochs (a prefix of the recipe's schedule)."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.epochs:
            self.model.stop_training = True


class StepRecord(keras.callbacks.Callback):
    """Each step's loss (Keras logs the running mean of the epoch: undone) and lr."""

    def __init__(self):
        super().__init__()
        self.running, self.lrs = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.lrs.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    def on_train_batch_end(self, batch, logs=None):
        self.running.append((batch, float(logs["loss"])))

    def losses(self):
        out, prev = [], 0.0
        for batch, mean in self.running:
            out.append((batch + 1) * mean - batch * (prev if batch else 0.0))
            prev = mean
        return out


def fit_epochs(model, dataset, recipe, run_dir, epochs, validation_data=None):
    """``keras_mld.training.fit`` of ``recipe`` (its ``train`` section) for the first
    ``epochs`` epochs of its schedule: ``(StepRecord, history)``."""
    from keras_mld.training.fit import fit

    record = StepRecord()
    history = fit(model, dataset, validation_data=validation_data, recipe=recipe,
                  run_dir=str(run_dir), verbose=0, callbacks=[record, StopAfter(epochs)])
    return record, history


def tiny_conv_body(inputs, widths=(8, 16)):
    """The fixtures' torch body ``(Conv2d(3x3, stride 2, padding 1, no bias), BatchNorm2d,
    ReLU) x 2`` in Keras (torch's BatchNorm defaults)."""
    h = inputs
    for filters in widths:
        h = keras.layers.ZeroPadding2D(1)(h)  # torch padding=1 (Keras "same" pads 0 / 1)
        h = keras.layers.Conv2D(filters, 3, strides=2, use_bias=False)(h)
        h = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(h)
        h = keras.layers.ReLU()(h)
    return h


def initial_variance_left(steps, momentum=0.1, updates_per_step=1, ema_decay=None):
    """What the initial moving variance 1 has become after ``steps`` steps of
    ``updates_per_step`` BatchNorm updates each; with ``ema_decay``, in the weights' EMA
    (which averages it once per step)."""
    keep = (1 - momentum) ** updates_per_step
    if ema_decay is None:
        return keep ** steps
    d = ema_decay
    return d ** steps + sum((1 - d) * d ** (steps - k) * keep ** k for k in range(1, steps + 1))


def biased_variance(samples_by_channels, left):
    """The correction ``torch_v -> `` Keras' biased moving variance; ``samples_by_channels``:
    ``{channels: B * H * W}`` of each BatchNorm, ``left``: :func:`initial_variance_left`."""
    def correct(start, torch_v):
        n = samples_by_channels[start.size]
        return left + (torch_v - left) * (n - 1) / n
    return correct


def assert_update_close(got, ref, init, steps, max_lr, kind, frozen=(), bn_correction=None,
                        decay=0.0):
    """``got`` (Keras) against ``ref`` (official), both ``{name: value}`` in the same order,
    with ``init`` the common start (module docstring). Names starting or ending with one of
    ``frozen`` must be unchanged on both sides; every other variable must have been moved by the
    official run."""
    assert len(got) == len(ref) == len(init)
    for (path, keras_v), torch_v in zip(got.items(), ref.values()):
        start = init[path]
        if path.endswith(("moving_variance", "running_var")) and bn_correction is not None:
            torch_v = bn_correction(start, torch_v)
        if zero_gradient(path):
            bound = steps * max_lr + decay * np.abs(start).max()
            assert np.abs(keras_v - start).max() <= bound, path
            continue
        size = np.abs(torch_v - start).max()
        ulps = 2 * np.finfo(np.float32).eps * np.abs(torch_v).max()  # the weights' rounding
        if path.startswith(tuple(frozen)) or path.endswith(tuple(frozen)):
            # unchanged on both sides (an EMA rounds d * e + (1 - d) * e)
            np.testing.assert_allclose(keras_v, start, rtol=1e-6, atol=ulps,
                                       err_msg=f"{kind} {path} (frozen)")
            assert size <= ulps + 1e-6 * np.abs(start).max(), f"{kind} {path}: moved officially"
            continue
        assert size > 0, f"{kind} {path}: the official run did not move it"
        np.testing.assert_allclose(keras_v, torch_v, rtol=0, atol=1e-3 * size + ulps,
                                   err_msg=f"{kind} {path}")
