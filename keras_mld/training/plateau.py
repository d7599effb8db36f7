"""``torch.optim.lr_scheduler.ReduceLROnPlateau`` as a Keras callback (C-Tran's official
schedule, Lanchantin et al., "General Multi-label Image Classification with Transformers",
arXiv:2011.14027: ReduceLROnPlateau on the validation loss).

Keras has its own ``ReduceLROnPlateau``, with different rules: an absolute ``min_delta``
(PyTorch's default threshold is *relative*, ``a < best * (1 - 1e-4)``), a ``cooldown`` that
does not reset the bad-epoch count the same way, and no ``eps``. This callback follows
PyTorch's ``step(metric)``, once per epoch::

    better(a)  = a < best * (1 - threshold)   (mode min, threshold_mode rel)
               = a > best * (1 + threshold)   (mode max, rel)
               = a < best - threshold / a > best + threshold   (abs)
    if better(a): best = a; bad = 0  else: bad += 1
    if cooldown_counter > 0: cooldown_counter -= 1; bad = 0
    if bad > patience:
        new = max(lr * factor, min_lr); if lr - new > eps: lr = new
        cooldown_counter = cooldown; bad = 0

The optimizer's learning rate must be a float (a variable), not a schedule.
"""
import math

import keras

__all__ = ["TorchReduceLROnPlateau"]


class TorchReduceLROnPlateau(keras.callbacks.Callback):
    """PyTorch's ``ReduceLROnPlateau`` rules (module docstring); arguments as PyTorch's,
    plus ``monitor`` (a log key, default ``val_loss``).

    Examples:
        >>> from keras_mld.training.plateau import TorchReduceLROnPlateau
        >>> cb = TorchReduceLROnPlateau(patience=1, factor=0.5)
        >>> lr, lrs = 1.0, []
        >>> for value in (3.0, 3.0, 3.0, 2.0):  # 2 epochs without improvement > patience
        ...     lr = cb.update(value, lr)
        ...     lrs.append(lr)
        >>> lrs
        [1.0, 1.0, 0.5, 0.5]
    """

    def __init__(self, monitor="val_loss", mode="min", factor=0.1, patience=10,
                 threshold=1e-4, threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        super().__init__()
        owner = type(self).__name__
        if mode not in ("min", "max"):
            raise ValueError(f"{owner}: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"{owner}: threshold_mode must be 'rel' or 'abs', "
                             f"got {threshold_mode!r}")
        if not isinstance(factor, (int, float)) or not 0.0 < factor < 1.0:
            raise ValueError(f"{owner}: factor must be a float in (0, 1), got {factor!r}")
        for name, val in (("patience", patience), ("cooldown", cooldown)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 0:
                raise ValueError(f"{owner}: {name} must be an int >= 0, got {val!r}")
        for name, val in (("threshold", threshold), ("min_lr", min_lr), ("eps", eps)):
            if not isinstance(val, (int, float)) or isinstance(val, bool) or val < 0:
                raise ValueError(f"{owner}: {name} must be a float >= 0, got {val!r}")
        self.monitor, self.mode, self.factor, self.patience = monitor, mode, factor, patience
        self.threshold, self.threshold_mode = float(threshold), threshold_mode
        self.cooldown, self.min_lr, self.eps = cooldown, float(min_lr), float(eps)
        self.reset()

    def reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _better(self, a):
        rel = self.threshold_mode == "rel"
        if self.mode == "min":
            return a < (self.best * (1.0 - self.threshold) if rel else self.best - self.threshold)
        return a > (self.best * (1.0 + self.threshold) if rel else self.best + self.threshold)

    def update(self, value, lr):
        """One PyTorch ``step(value)`` at learning rate ``lr``; returns the new rate."""
        value = float(value)
        if self._better(value):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new = max(lr * self.factor, self.min_lr)
            if lr - new > self.eps:
                lr = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        return lr

    def on_train_begin(self, logs=None):
        if isinstance(self.model.optimizer.learning_rate, keras.optimizers.schedules.
                      LearningRateSchedule) or callable(getattr(self.model.optimizer,
                                                                "_learning_rate", None)):
            raise ValueError(f"{type(self).__name__}: the optimizer's learning rate must be "
                             "a float, not a schedule (recipe schedule: constant)")

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(f"{type(self).__name__}: monitor {self.monitor!r} is not in the "
                             f"logs (available: {sorted(logs or {})})")
        opt = self.model.optimizer
        lr = float(keras.ops.convert_to_numpy(opt.learning_rate))
        new = self.update(value, lr)
        if new != lr:
            opt.learning_rate = new
        logs["lr"] = new
