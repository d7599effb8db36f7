"""Query2Label's early stop (Liu et al., "Query2Label: A Simple Transformer Way to
Multi-Label Classification", arXiv:2107.10834; ``main_mlc.py --early-stop`` of the released
code): the rule as a pure state machine over each epoch's (regular, EMA) mAPs, and the
Keras callback that applies it, resumable as the callbacks of
:mod:`keras_mld.training.callbacks` (a JSON ``state_path`` of the pairs seen, written
atomically, read back as untrusted).
"""
import os

import keras

from keras_mld.atomic import write_json
from keras_mld.untrusted import MAX_STATE_BYTES, finite_number, read_json

__all__ = ["Query2LabelStopRule", "Query2LabelEarlyStopping"]


class Query2LabelStopRule:
    """The early stop of Query2Label's ``main_mlc.py`` (``--early-stop``; Liu et al.,
    arXiv:2107.10834), as a pure state machine over the epochs' (regular, EMA) mAPs.

    Per epoch, as the official loop keeps them: the best regular mAP and its epoch, the
    best EMA mAP, and the epoch of the best ``max(regular, EMA)`` (each a strict
    improvement over a start of 0). It stops when
    ``epoch - max(best_epoch, best_regular_epoch) > patience`` (official 8) **and** more than
    one epoch was validated **and** this epoch's EMA mAP is below the best EMA mAP.
    """

    def __init__(self, patience=8):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"Query2LabelStopRule: patience must be an int >= 0, got "
                             f"{patience!r}")
        self.patience = patience
        self.reset()

    def reset(self):
        self.best, self.best_epoch = 0.0, -1
        self.best_regular, self.best_regular_epoch = 0.0, -1
        self.best_ema = 0.0
        self.epoch = -1

    def update(self, regular, ema):
        """Feed one epoch's mAPs; returns ``(stop, is_new_best)``."""
        regular, ema = float(regular), float(ema)
        self.epoch += 1
        if regular > self.best_regular:
            self.best_regular, self.best_regular_epoch = regular, self.epoch
        if ema > self.best_ema:
            self.best_ema = ema
        value = ema if ema > regular else regular
        improved = value > self.best
        if improved:
            self.best_epoch = self.epoch
        self.best = max(value, self.best)
        stop = (self.best_epoch >= 0
                and self.epoch - max(self.best_epoch, self.best_regular_epoch) > self.patience
                and self.epoch > 0 and ema < self.best_ema)
        return stop, improved


class Query2LabelEarlyStopping(keras.callbacks.Callback):
    """Keras callback applying :class:`Query2LabelStopRule` to ``logs["val_<metric>"]``
    and ``logs["val_ema_<metric>"]`` (from :class:`EMAEvaluation`; ``metric`` default
    ``mAP``). ``state_path``: optional JSON file of the pairs seen, for resuming (as the
    other callbacks here, see the module docstring)."""

    def __init__(self, metric="mAP", patience=8, state_path=None, verbose=0):
        super().__init__()
        self.metric = metric
        self.rule = Query2LabelStopRule(patience)
        self.state_path = state_path
        self.verbose = verbose
        self.values, self._synced, self.stopped_epoch = [], False, None

    def on_train_begin(self, logs=None):
        self.values, self._synced, self.stopped_epoch = [], False, None
        if self.state_path and os.path.exists(self.state_path):
            where = f"Query2LabelEarlyStopping: state {self.state_path!r}"
            state = read_json(self.state_path, where, max_bytes=MAX_STATE_BYTES)
            values = state.get("values") if isinstance(state, dict) else None
            if not isinstance(values, list) or not all(
                    isinstance(v, list) and len(v) == 2 for v in values):
                raise ValueError(f"{where}: expected {{'values': [[regular, ema], ...]}}")
            self.values = [[finite_number(a, f"{where}: values"),
                            finite_number(b, f"{where}: values")] for a, b in values]

    def on_epoch_begin(self, epoch, logs=None):
        if not self._synced:
            self.values = self.values[:epoch]
            self.rule.reset()
            for regular, ema in self.values:
                self.rule.update(regular, ema)
            self._synced = True

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        keys = (f"val_{self.metric}", f"val_ema_{self.metric}")
        missing = [k for k in keys if k not in logs]
        if missing:
            raise ValueError(f"Query2LabelEarlyStopping: {missing} not in the logs (needs "
                             f"validation data and an EMA; available: {sorted(logs)})")
        pair = [float(logs[keys[0]]), float(logs[keys[1]])]
        self.values.append(pair)
        if self.state_path:
            write_json(self.state_path, {"metric": self.metric, "values": self.values})
        stop, _ = self.rule.update(*pair)
        if stop:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: early stopping (Query2Label's rule)")

    def on_train_end(self, logs=None):
        if self.state_path and os.path.exists(self.state_path):
            os.remove(self.state_path)
