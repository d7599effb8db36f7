"""An exponential moving average of the whole model state, updated after every optimizer
step: the ``ModelEma`` of the ML-Decoder / ASL / Query2Label training code (Ridnik et al.,
"ML-Decoder: Scalable and Versatile Classification Head", arXiv:2111.12933, appendix C:
"EMA with decay 0.9997"), as opposed to Keras' ``use_ema`` optimizer option.

The two differ in what they average and when they start::

    ModelStateEMA (this module, PyTorch's ModelEma):
        e_0 = w_0                              (a copy of the state before the first step)
        e_t = d * e_{t-1} + (1 - d) * w_t      after update t, for EVERY float variable of
                                               the model: weights and BatchNorm moving
                                               statistics
    Keras use_ema: trainable variables only (moving statistics stay the raw ones), and
        e_1 = w_1 (the first average is the weights after the first update).

With ``d = 0.9997`` the first difference alone weighs ``0.9997^t``: 83 % of the average
after 640 steps. Integer variables (counters, seed-generator states) are not averaged.

On JAX the callback makes the trainer write its state back into the variables after
every step (``jax_state_sync``), which Keras otherwise does once per epoch.

Use it as a Keras callback (``on_train_batch_end`` runs after the optimizer step, as the
official ``ema.update(model)`` does after ``optimizer.step()``); :meth:`swapped` puts the
averages into the model (e.g. to evaluate it) and restores the raw values bit-exactly.
"""
import contextlib
import os
import warnings
import zipfile

import keras
import numpy as np

from keras_mld.atomic import atomic_path

__all__ = ["ModelStateEMA"]


def _float_variables(model):
    return [v for v in model.variables
            if "float" in str(keras.backend.standardize_dtype(v.dtype))]


class ModelStateEMA(keras.callbacks.Callback):
    """EMA of every float variable of ``model`` (module docstring).

    Args:
        decay: ``d`` in ``[0, 1)`` (official 0.9997).
        model: the model whose state is averaged; default: the trained model (its
            ``inner_model`` for a :class:`~keras_mld.training.SAMModel`).
        state_path: optional ``.npz`` file for resuming: the averages are written there
            (atomically) at the end of every epoch, with the epoch number, and read back
            when training begins; at the first ``on_epoch_begin(epoch)`` they are kept only
            if they are those of epoch ``epoch - 1`` (where ``BackupAndRestore`` resumed),
            else the average restarts from the current weights with a warning.

    ``averages`` holds one ``keras.Variable`` (same dtype, on the same device: no host
    copies per step) per variable of :attr:`variables` once training has begun.

    Examples:
        >>> import numpy as np, keras
        >>> from keras_mld.training.ema import ModelStateEMA
        >>> m = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
        >>> _ = m.layers[0].kernel.assign([[1.0]])
        >>> ema = ModelStateEMA(decay=0.5, model=m)
        >>> ema.on_train_begin()
        >>> _ = m.layers[0].kernel.assign([[3.0]]); ema.on_train_batch_end(0)
        >>> float(keras.ops.convert_to_numpy(ema.averages[0])[0, 0])  # 0.5 * 1 + 0.5 * 3
        2.0
    """

    def __init__(self, decay=0.9997, model=None, state_path=None):
        super().__init__()
        if not isinstance(decay, (int, float)) or isinstance(decay, bool) \
                or not 0.0 <= decay < 1.0:
            raise ValueError(f"ModelStateEMA: decay must be a float in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.ema_model = model
        self.state_path = None if state_path is None else os.fspath(state_path)
        self._saved = None
        self.variables = None
        self.averages = None

    def _target(self):
        if self.ema_model is not None:
            return self.ema_model
        return getattr(self.model, "inner_model", self.model)

    def on_train_begin(self, logs=None):
        if self.averages is not None:  # a second fit() call continues the same average
            return
        self.variables = _float_variables(self._target())
        # in the variable's dtype, as the official float32 state_dict average
        self.averages = [keras.Variable(np.array(keras.ops.convert_to_numpy(v)),
                                        dtype=v.dtype, trainable=False, name=f"ema_{v.name}")
                         for v in self.variables]
        self._saved = None
        if self.state_path and os.path.exists(self.state_path):
            try:
                with np.load(self.state_path, allow_pickle=False) as z:
                    self._saved = (int(z["epoch"]), [z[f"v{i}"] for i in range(len(z) - 1)])
            except (OSError, ValueError, KeyError, TypeError, EOFError,
                    zipfile.BadZipFile) as e:  # a damaged file: never another exception
                raise ValueError(f"ModelStateEMA: {self.state_path} is not a readable EMA "
                                 f"state ({type(e).__name__}: {e})") from None

    def on_epoch_begin(self, epoch, logs=None):
        if self._saved is None:
            return
        saved_epoch, values = self._saved
        self._saved = None
        shapes = [tuple(v.shape) for v in self.variables]
        if saved_epoch == epoch - 1 and [tuple(a.shape) for a in values] == shapes:
            for a, value in zip(self.averages, values):
                a.assign(value)
        else:
            warnings.warn(f"ModelStateEMA: {self.state_path} holds epoch {saved_epoch + 1}, "
                          f"training resumes at epoch {epoch + 1}: the average restarts from "
                          "the current weights")

    def on_epoch_end(self, epoch, logs=None):
        if not self.state_path:
            return
        arrays = {f"v{i}": keras.ops.convert_to_numpy(a) for i, a in enumerate(self.averages)}
        with atomic_path(self.state_path, overwrite=True, caller="ModelStateEMA") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, epoch=np.int64(epoch), **arrays)

    def on_train_end(self, logs=None):
        if self.state_path and os.path.exists(self.state_path):
            os.remove(self.state_path)  # the run finished: nothing to resume

    def on_train_batch_end(self, batch, logs=None):
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:  # JAX: the trainer holds the state until asked for it
            sync()
        d = self.decay
        for a, v in zip(self.averages, self.variables):
            a.assign(d * a.value + (1.0 - d) * v.value)

    @contextlib.contextmanager
    def swapped(self, model=None):
        """Context manager: the model's variables hold the averages inside (cast to their
        dtype); the raw values are restored bit-exactly on exit."""
        if self.averages is None:
            raise ValueError("ModelStateEMA: no averages yet (training has not begun)")
        raw = [np.array(keras.ops.convert_to_numpy(v)) for v in self.variables]
        try:
            for v, a in zip(self.variables, self.averages):
                v.assign(a.value)
            yield model if model is not None else self._target()
        finally:
            for v, r in zip(self.variables, raw):
                v.assign(r)
