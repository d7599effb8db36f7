"""OneCycle learning-rate policy (Smith 2018, arXiv:1803.09820) as used by
Prokofiev & Sovrasov (arXiv:2209.06585) section 3.5 (official ``pct_start`` 0.2).

Same values as ``torch.optim.lr_scheduler.OneCycleLR(max_lr, total_steps,
pct_start=0.2, anneal_strategy="cos", div_factor=25, final_div_factor=1e4,
three_phase=False)``: :class:`OneCycle` is its learning-rate part, :class:`OneCycleMomentum`
its momentum part (``cycle_momentum=True``: Adam's beta1 or SGD's momentum goes from
``max_momentum`` down to ``base_momentum`` while the learning rate rises, and back)::

    initial_lr = max_lr / div_factor
    min_lr     = initial_lr / final_div_factor
    s1 = pct_start * total_steps - 1          (step at which max_lr is reached)
    s2 = total_steps - 1                      (last step: min_lr)
    cos_anneal(a, b, p) = b + (a - b) / 2 * (1 + cos(pi * p))
    lr(t) = cos_anneal(initial_lr, max_lr, t / s1)                for t <= s1
    lr(t) = cos_anneal(max_lr, min_lr, (t - s1) / (s2 - s1))      for t >  s1

    momentum(t) = cos_anneal(max_m, base_m, t / s1)                for t <= s1
    momentum(t) = cos_anneal(base_m, max_m, (t - s1) / (s2 - s1))  for t >  s1

Steps past ``total_steps - 1`` keep ``min_lr``. ``step`` is the optimizer's iteration
count (0 for the first update), so ``total_steps = epochs * steps_per_epoch``.
"""
import math

import keras
from keras import ops

__all__ = ["OneCycle", "OneCycleMomentum"]


def _anneal(start, end, pct):
    return end + (start - end) / 2.0 * (1.0 + ops.cos(math.pi * pct))


def _two_phases(step, total_steps, pct_start, start, peak, end):
    s1 = pct_start * total_steps - 1.0
    s2 = float(total_steps - 1)
    t = ops.minimum(ops.cast(step, "float32"), s2)
    warm = _anneal(start, peak, ops.clip(t / s1, 0.0, 1.0))
    cool = _anneal(peak, end, ops.clip((t - s1) / (s2 - s1), 0.0, 1.0))
    return ops.where(t <= s1, warm, cool)


def _check_cycle(owner, total_steps, pct_start):
    if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 2:
        raise ValueError(f"{owner}: total_steps must be an int >= 2, got {total_steps!r}")
    if not 0.0 < float(pct_start) < 1.0:
        raise ValueError(f"{owner}: pct_start must be in (0, 1), got {pct_start!r}")
    s1 = float(pct_start) * total_steps - 1.0
    if not 0.0 < s1 < total_steps - 1:
        raise ValueError(f"{owner}: pct_start * total_steps must lie in (1, total_steps), "
                         f"got pct_start={pct_start!r}, total_steps={total_steps}")


@keras.saving.register_keras_serializable(package="keras_mld")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine OneCycle schedule (see module docstring for the closed form).

    Args:
        max_lr: peak learning rate (> 0).
        total_steps: number of optimizer steps of the whole run (>= 2).
        pct_start: fraction of the steps spent warming up (0 < pct_start < 1; default 0.2,
            the official value; torch's default is 0.3).
        div_factor: ``initial_lr = max_lr / div_factor`` (default 25, as torch).
        final_div_factor: ``min_lr = initial_lr / final_div_factor`` (default 1e4, as torch).
    """

    def __init__(self, max_lr, total_steps, pct_start=0.2, div_factor=25.0,
                 final_div_factor=1e4, name="OneCycle"):
        if not isinstance(max_lr, (int, float)) or not max_lr > 0:
            raise ValueError(f"OneCycle: max_lr must be a float > 0, got {max_lr!r}")
        _check_cycle("OneCycle", total_steps, pct_start)
        for arg, val in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
            if not isinstance(val, (int, float)) or not val > 0:
                raise ValueError(f"OneCycle: {arg} must be a float > 0, got {val!r}")
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.name = name

    @property
    def initial_lr(self):
        return self.max_lr / self.div_factor

    @property
    def min_lr(self):
        return self.initial_lr / self.final_div_factor

    def __call__(self, step):
        return _two_phases(step, self.total_steps, self.pct_start, self.initial_lr,
                           self.max_lr, self.min_lr)

    def get_config(self):
        return {"max_lr": self.max_lr, "total_steps": self.total_steps,
                "pct_start": self.pct_start, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor, "name": self.name}


@keras.saving.register_keras_serializable(package="keras_mld")
class OneCycleMomentum(keras.optimizers.schedules.LearningRateSchedule):
    """The momentum part of ``torch.optim.lr_scheduler.OneCycleLR(cycle_momentum=True)``
    (module docstring): a schedule for :class:`~keras_mld.training.TorchAdam`'s ``beta_1``
    or :class:`~keras_mld.training.TorchSGD`'s ``momentum``.

    Args:
        total_steps, pct_start: as :class:`OneCycle` (use the same values).
        base_momentum: the value at the learning-rate peak (PyTorch default 0.85).
        max_momentum: the value at the start and the end (PyTorch default 0.95).

    Examples:
        >>> from keras_mld.training.schedules import OneCycleMomentum
        >>> m = OneCycleMomentum(10, pct_start=0.2)  # peak at step 0.2 * 10 - 1 = 1
        >>> [round(float(m(t)), 3) for t in (0, 1, 9)]
        [0.95, 0.85, 0.95]
    """

    def __init__(self, total_steps, pct_start=0.2, base_momentum=0.85, max_momentum=0.95,
                 name="OneCycleMomentum"):
        _check_cycle("OneCycleMomentum", total_steps, pct_start)
        for arg, val in (("base_momentum", base_momentum), ("max_momentum", max_momentum)):
            if not isinstance(val, (int, float)) or isinstance(val, bool) or not 0 <= val < 1:
                raise ValueError(f"OneCycleMomentum: {arg} must be a float in [0, 1), "
                                 f"got {val!r}")
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.base_momentum = float(base_momentum)
        self.max_momentum = float(max_momentum)
        self.name = name

    def __call__(self, step):
        return _two_phases(step, self.total_steps, self.pct_start, self.max_momentum,
                           self.base_momentum, self.max_momentum)

    def get_config(self):
        return {"total_steps": self.total_steps, "pct_start": self.pct_start,
                "base_momentum": self.base_momentum, "max_momentum": self.max_momentum,
                "name": self.name}
