"""Training callbacks of Prokofiev & Sovrasov (arXiv:2209.06585) section 3.5: EMA evaluation, the
papers' early-stopping rule and
an atomic best-model checkpoint (Query2Label's own early stop:
:mod:`keras_mld.training.query2label_stop`).

Resume: each stateful callback here may keep a JSON file (``state_path``) holding the
monitored value of every finished epoch, written atomically. On (re)start, at the first
``on_epoch_begin(epoch)`` it keeps the first ``epoch`` values (``epoch`` is where
``keras.callbacks.BackupAndRestore`` resumed) and replays them, so its state matches the
restored weights even if the process died between the two writes. Place
``BackupAndRestore`` *after* these callbacks. ``restore_best_weights`` keeps the best
weights in memory only (after a resume they are those of the best epoch seen since).
"""
import contextlib
import os

import keras
import numpy as np

from keras_mld.atomic import save_model, write_json
from keras_mld.untrusted import MAX_STATE_BYTES, finite_number, read_json

__all__ = ["swapped_ema_weights", "ema_variables", "EMAEvaluation", "EarlyStoppingRule",
           "EMAEarlyStopping", "BestModelCheckpoint"]


# ---------------------------------------------------------------- EMA weights
def _base_optimizer(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)  # unwrap LossScaleOptimizer


def ema_variables(model, optimizer=None):
    """The optimizer's EMA variable for each of ``model.trainable_variables`` (same order).

    Needs a Keras optimizer built with ``use_ema=True`` that has updated ``model``.
    """
    opt = _base_optimizer(optimizer if optimizer is not None else model.optimizer)
    if opt is None or not getattr(opt, "use_ema", False):
        raise ValueError("ema_variables: the optimizer must be built with use_ema=True")
    if not opt.built:
        raise ValueError("ema_variables: the optimizer is not built yet (no EMA weights)")
    return [opt._model_variables_moving_average[opt._get_variable_index(v)]
            for v in model.trainable_variables]


@contextlib.contextmanager
def swapped_ema_weights(model, optimizer=None):
    """Context manager: ``model``'s trainable variables hold the EMA weights inside.

    The raw values are copied to host memory first and assigned back on exit (also on
    error), so the restore is bit-exact.
    """
    averages = ema_variables(model, optimizer)
    variables = model.trainable_variables
    raw = [np.array(keras.ops.convert_to_numpy(v)) for v in variables]
    try:
        for v, a in zip(variables, averages):
            v.assign(a)
        yield model
    finally:
        for v, r in zip(variables, raw):
            v.assign(r)


def _ema_context(model, ema):
    return ema.swapped() if ema is not None else swapped_ema_weights(model)


class EMAEvaluation(keras.callbacks.Callback):
    """Evaluates ``validation_data`` with the raw and with the EMA weights every epoch.

    Adds ``val_ema_<metric>`` (e.g. ``val_ema_loss``, ``val_ema_mAP``) to the epoch logs,
    and ``val_<metric>`` too when ``fit`` was not given ``validation_data`` (or with
    ``evaluate_raw=True``). Put it before callbacks that monitor these keys. The EMA
    weights come from the model's optimizer (``use_ema=True``, momentum 0.9997 as in ML-Decoder
    (Ridnik et al., arXiv:2111.12933) appendix C);
    BatchNorm moving statistics are the raw ones (Keras keeps no EMA of them). With
    ``ema`` (a :class:`~keras_mld.training.ema.ModelStateEMA`) they come from it instead:
    weights and moving statistics. Also adds ``val_max_<metric>``: the better of the raw and
    the EMA value (the official loops keep ``max(regular, EMA)`` mAP), and
    ``val_max_<metric>_is_ema`` (1.0 when that is the EMA's).
    """

    def __init__(self, validation_data, steps=None, evaluate_raw="auto", prefix="val_ema_",
                 ema=None):
        super().__init__()
        self.ema = ema
        if evaluate_raw not in ("auto", True, False):
            raise ValueError("EMAEvaluation: evaluate_raw must be 'auto', True or False, "
                             f"got {evaluate_raw!r}")
        self.validation_data = validation_data
        self.steps = steps
        self.evaluate_raw = evaluate_raw
        self.prefix = prefix

    def _evaluate(self):
        data = self.validation_data
        if isinstance(data, (tuple, list)):  # (x, y[, sample_weight]) as in fit()
            x, y, sw = keras.utils.unpack_x_y_sample_weight(tuple(data))
            return self.model.evaluate(x, y, sample_weight=sw, steps=self.steps, verbose=0,
                                       return_dict=True)
        return self.model.evaluate(data, steps=self.steps, verbose=0, return_dict=True)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self.evaluate_raw is True or (self.evaluate_raw == "auto" and "val_loss" not in logs):
            logs.update({f"val_{k}": float(v) for k, v in self._evaluate().items()})
        with _ema_context(self.model, self.ema):
            ema = self._evaluate()
        logs.update({f"{self.prefix}{k}": float(v) for k, v in ema.items()})
        for k, v in ema.items():  # model selection of the official loops: max(regular, EMA)
            if f"val_{k}" in logs:
                best = max if "loss" not in k else min
                logs[f"val_max_{k}"] = float(best(logs[f"val_{k}"], v))
                logs[f"val_max_{k}_is_ema"] = float(best(logs[f"val_{k}"], v) == v
                                                    and v != logs[f"val_{k}"])


def _resolve_mode(mode, monitor):
    if mode == "auto":
        return "min" if "loss" in monitor else "max"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    return mode


class _ReplayedState(keras.callbacks.Callback):
    """Keeps the monitored value of each finished epoch; persisted/replayed for resume."""

    def __init__(self, monitor, mode, state_path):
        super().__init__()
        self.monitor = monitor
        self.mode = _resolve_mode(mode, monitor)
        self.state_path = state_path
        self.values = []
        self._synced = False

    def _replay(self, values):  # subclasses rebuild their state from the values
        raise NotImplementedError

    def on_train_begin(self, logs=None):
        self._synced = False
        self.values = []
        if self.state_path and os.path.exists(self.state_path):  # untrusted: -> ValueError
            where = f"{type(self).__name__}: resume state {self.state_path!r}"
            state = read_json(self.state_path, where, max_bytes=MAX_STATE_BYTES)
            values = state.get("values") if isinstance(state, dict) else None
            if not isinstance(values, list):
                raise ValueError(f"{where}: expected an object with a 'values' list (delete "
                                 "it to restart this callback's history)")
            self.values = [finite_number(v, f"{where}: values") for v in values]

    def on_epoch_begin(self, epoch, logs=None):
        if not self._synced:
            self.values = self.values[:epoch]
            self._replay(self.values)
            self._synced = True

    def _record(self, value):
        self.values.append(float(value))
        if self.state_path:
            write_json(self.state_path, {"monitor": self.monitor, "values": self.values})

    def on_train_end(self, logs=None):
        if self.state_path and os.path.exists(self.state_path):
            os.remove(self.state_path)  # the run finished: nothing to resume


# ---------------------------------------------------------------- early stopping
class EarlyStoppingRule:
    """The papers' early-stopping rule, as a pure state machine.

    Text (Prokofiev & Sovrasov (arXiv:2209.06585) section 3.5): "if the best result on the
    validation subset hasn't been improved during 5 epochs, and evaluation results stay
    below the EMA averaged sequence of the previous best results, the training process
    stops". Our reading (``rule="paper"``, default), with scores oriented so that higher
    is better:

    - a score ``s > best + min_delta`` is a new best: ``best = s``, ``wait = 0``, and the
      EMA of the sequence of bests is updated, ``ema = smoothing * s + (1 - smoothing) *
      ema`` (``ema = s`` for the first best);
    - otherwise ``wait += 1``;
    - stop when ``wait >= patience`` **and** ``s < ema``: both conditions of the text.
      A score that plateaus between the EMA and the best keeps training going.

    ``smoothing = 0.8`` is the factor of the authors' implementation (OpenVINO
    deep-object-reid, multilabel engine). That implementation differs from the text;
    ``rule="official"`` reproduces it (``MultilabelEngine.exit_on_plateau_and_choose_best``):
    ``ema`` starts at 0 and is updated with every score whose value rounded to 4 decimals
    exceeds it; ``wait`` counts epochs since a score last exceeded ``ema`` and training
    stops when ``wait >= patience`` (no separate "best" condition), or at once when the
    rounded score is 1.

    ``warmup_epochs``: the scores of the first ``warmup_epochs - 1`` epochs never count as
    "not improved" (the official loop counts only once OneCycle's warm-up has finished,
    i.e. from the epoch in which the learning rate peaks); an improving score still
    updates ``ema`` and resets ``wait``. 0 (default): every epoch counts.
    """

    def __init__(self, patience=5, smoothing=0.8, min_delta=0.0, mode="max", rule="paper",
                 warmup_epochs=0):
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"EarlyStoppingRule: patience must be an int >= 1, got {patience!r}")
        if not 0.0 < float(smoothing) <= 1.0:
            raise ValueError(f"EarlyStoppingRule: smoothing must be in (0, 1], got {smoothing!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStoppingRule: mode must be 'min' or 'max', got {mode!r}")
        if rule not in ("paper", "official"):
            raise ValueError(f"EarlyStoppingRule: rule must be 'paper' or 'official', got {rule!r}")
        if not isinstance(warmup_epochs, int) or isinstance(warmup_epochs, bool) \
                or warmup_epochs < 0:
            raise ValueError("EarlyStoppingRule: warmup_epochs must be an int >= 0, got "
                             f"{warmup_epochs!r}")
        self.patience, self.smoothing, self.min_delta = patience, float(smoothing), min_delta
        self.mode, self.rule, self.warmup_epochs = mode, rule, warmup_epochs
        self.reset()

    def reset(self):
        self.best = None  # oriented (higher is better)
        self.ema = 0.0 if self.rule == "official" else None
        self.wait = 0
        self.best_index = None
        self.count = 0

    def update(self, score):
        """Feed one epoch's score; returns ``(stop, is_new_best)``."""
        s = float(score) if self.mode == "max" else -float(score)
        index, self.count = self.count, self.count + 1
        improved = self.best is None or s > self.best + self.min_delta
        if improved:
            self.best, self.best_index = s, index
        counts = index + 1 >= self.warmup_epochs  # the warm-up is over
        if self.rule == "official":
            rounded = round(s, 4)
            if self.mode == "max" and abs(rounded - 1.0) <= 1e-4 + 1e-5:  # np.isclose
                return True, improved
            if rounded > self.ema:
                self.ema = self.smoothing * s + (1 - self.smoothing) * self.ema
                self.wait = 0
            elif counts:
                self.wait += 1
            return self.wait >= self.patience, improved
        if improved:
            self.wait = 0
            self.ema = s if self.ema is None else (self.smoothing * s
                                                   + (1 - self.smoothing) * self.ema)
        elif counts:
            self.wait += 1
        return self.wait >= self.patience and s < self.ema, improved


class EMAEarlyStopping(_ReplayedState):
    """Keras callback applying :class:`EarlyStoppingRule` to ``logs[monitor]``.

    Args:
        monitor: log key (default ``val_mAP``; ``val_ema_mAP`` with :class:`EMAEvaluation`).
        patience, smoothing, min_delta, rule, warmup_epochs: see :class:`EarlyStoppingRule`.
        mode: ``auto`` (``min`` if "loss" in ``monitor``), ``min`` or ``max``.
        restore_best_weights: at the end, load the weights of the best epoch (held in
            memory); the EMA weights when ``monitor`` starts with ``val_ema_``. This runs
            after Keras' own end-of-fit ``finalize_variable_values`` (which, with
            ``use_ema=True``, leaves the EMA weights in the model).
        state_path: optional JSON file for resuming (see module docstring).
    """

    def __init__(self, monitor="val_mAP", patience=5, smoothing=0.8, min_delta=0.0,
                 mode="auto", rule="paper", restore_best_weights=False, state_path=None,
                 verbose=0, ema=None, warmup_epochs=0):
        super().__init__(monitor, mode, state_path)
        self.ema = ema
        self.rule = EarlyStoppingRule(patience, smoothing, min_delta, self.mode, rule,
                                      warmup_epochs)
        self.restore_best_weights = restore_best_weights
        self.verbose = verbose
        self.best_weights = None
        self.stopped_epoch = None

    def _replay(self, values):
        self.rule.reset()
        for v in values:
            self.rule.update(v)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best_weights, self.stopped_epoch = None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(f"EMAEarlyStopping: monitor {self.monitor!r} is not in the logs "
                             f"(available: {sorted(logs or {})})")
        self._record(value)
        stop, improved = self.rule.update(value)
        if improved and self.restore_best_weights:
            ctx = _ema_context(self.model, self.ema) if self.monitor.startswith("val_ema_") \
                else contextlib.nullcontext()
            with ctx:
                self.best_weights = self.model.get_weights()
        if stop:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: early stopping ({self.monitor} not improved for "
                      f"{self.rule.wait} epochs and below the EMA of the previous bests)")

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


# ---------------------------------------------------------------- checkpoint
class BestModelCheckpoint(_ReplayedState):
    """Saves the model whenever ``logs[monitor]`` improves, atomically (write aside, rename).

    Args:
        filepath: ``*.keras`` (whole model) or ``*.weights.h5``.
        monitor, mode: as :class:`EMAEarlyStopping`.
        model_to_save: the model to write (default: ``model.inner_model`` for a
            :class:`~keras_mld.training.SAMModel`, else the trained model).
        ema_weights: ``"auto"`` saves the EMA weights when ``monitor`` starts with
            ``val_ema_``, and for ``val_max_*`` (model selection max(regular, EMA) of
            :class:`EMAEvaluation`) whichever of the two was better; True / False force it.
        ema: a :class:`~keras_mld.training.ema.ModelStateEMA` holding the averages
            (default: the optimizer's ``use_ema`` averages).
        state_path: optional JSON file for resuming (see module docstring).
    """

    def __init__(self, filepath, monitor="val_mAP", mode="auto", model_to_save=None,
                 ema_weights="auto", state_path=None, verbose=0, ema=None):
        super().__init__(monitor, mode, state_path)
        self.ema = ema
        self.filepath = os.fspath(filepath)
        self.model_to_save = model_to_save
        if ema_weights == "auto":  # "is_ema": whichever EMAEvaluation found better
            ema_weights = "is_ema" if monitor.startswith("val_max_") else \
                monitor.startswith("val_ema_")
        self.ema_weights = ema_weights
        self.verbose = verbose
        self.best = None

    def _better(self, value, ref):
        return ref is None or (value > ref if self.mode == "max" else value < ref)

    def _replay(self, values):
        self.best = None
        for v in values:
            if self._better(v, self.best):
                self.best = v

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(f"BestModelCheckpoint: monitor {self.monitor!r} is not in the "
                             f"logs (available: {sorted(logs or {})})")
        value = float(value)
        if self._better(value, self.best):
            target = self.model_to_save or getattr(self.model, "inner_model", self.model)
            use_ema = self.ema_weights == "is_ema" and logs.get(f"{self.monitor}_is_ema")
            use_ema = use_ema or self.ema_weights is True
            if not use_ema:
                ctx = contextlib.nullcontext()
            elif self.ema is not None:
                ctx = self.ema.swapped(target)
            else:
                ctx = swapped_ema_weights(target, self.model.optimizer)
            with ctx:
                save_model(target, self.filepath)
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved to {value:.5f}, "
                      f"saved {self.filepath}")
            self.best = value
        self._record(value)
