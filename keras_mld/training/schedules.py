"""OneCycle learning-rate policy (Smith 2018, arXiv:1803.09820) as used by
Prokofiev & Sovrasov (arXiv:2209.06585) section 3.5 (official ``pct_start`` 0.2).

Same values as ``torch.optim.lr_scheduler.OneCycleLR(max_lr, total_steps,
pct_start=0.2, anneal_strategy="cos", div_factor=25, final_div_factor=1e4,
three_phase=False)`` (its learning-rate part; momentum is not cycled here)::

    initial_lr = max_lr / div_factor
    min_lr     = initial_lr / final_div_factor
    s1 = pct_start * total_steps - 1          (step at which max_lr is reached)
    s2 = total_steps - 1                      (last step: min_lr)
    cos_anneal(a, b, p) = b + (a - b) / 2 * (1 + cos(pi * p))
    lr(t) = cos_anneal(initial_lr, max_lr, t / s1)                for t <= s1
    lr(t) = cos_anneal(max_lr, min_lr, (t - s1) / (s2 - s1))      for t >  s1

Steps past ``total_steps - 1`` keep ``min_lr``. ``step`` is the optimizer's iteration
count (0 for the first update), so ``total_steps = epochs * steps_per_epoch``.
"""
import math

import keras
from keras import ops

__all__ = ["OneCycle"]


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
        if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 2:
            raise ValueError(f"OneCycle: total_steps must be an int >= 2, got {total_steps!r}")
        if not 0.0 < float(pct_start) < 1.0:
            raise ValueError(f"OneCycle: pct_start must be in (0, 1), got {pct_start!r}")
        s1 = float(pct_start) * total_steps - 1.0
        if not 0.0 < s1 < total_steps - 1:
            raise ValueError("OneCycle: pct_start * total_steps must lie in (1, total_steps), "
                             f"got pct_start={pct_start!r}, total_steps={total_steps}")
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
        s1 = self.pct_start * self.total_steps - 1.0
        s2 = float(self.total_steps - 1)
        t = ops.minimum(ops.cast(step, "float32"), s2)

        def anneal(start, end, pct):
            return end + (start - end) / 2.0 * (1.0 + ops.cos(math.pi * pct))

        warm = anneal(self.initial_lr, self.max_lr, ops.clip(t / s1, 0.0, 1.0))
        cool = anneal(self.max_lr, self.min_lr, ops.clip((t - s1) / (s2 - s1), 0.0, 1.0))
        return ops.where(t <= s1, warm, cool)

    def get_config(self):
        return {"max_lr": self.max_lr, "total_steps": self.total_steps,
                "pct_start": self.pct_start, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor, "name": self.name}
