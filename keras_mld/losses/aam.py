"""Asymmetric Angular Margin loss (AAM), on cosines.

Paper: "Combining Metric Learning and Attention Heads For Accurate and Efficient
Multilabel Image Classification" (Prokofiev & Sovrasov, arXiv:2209.06585,
section 3.4, eq. 1). ``keras.ops`` only.
"""
from keras import ops
import keras

from keras_mld.losses.common import (Float32Loss, check_eps, check_gamma, clamped_log, float32,
                                     pow_from_log, split_ignore)
from keras_mld.validation import check_number

# Per-dataset hyper-parameters of the paper (arXiv:2209.06585, section 4). ``learning_rate`` is the
# optimiser's (for training recipes); the other keys are AAMLoss arguments.
AAM_PRESETS = {
    "coco": dict(s=23.0, m=0.0, k=0.7, gamma_neg=1.0, gamma_pos=0.0, learning_rate=0.007),
    "voc": dict(s=17.0, m=0.0, k=0.7, gamma_neg=2.0, gamma_pos=1.0, learning_rate=0.005),
    "nus_wide": dict(s=23.0, m=0.0, k=0.7, gamma_neg=2.0, gamma_pos=1.0, learning_rate=0.009),
    "vg500": dict(s=25.0, m=0.0, k=0.7, gamma_neg=1.0, gamma_pos=0.0, learning_rate=0.005),
}


@keras.saving.register_keras_serializable(package="keras_mld")
class AAMLoss(Float32Loss):
    """Asymmetric angular margin loss on cosines ``c = cos(theta_j)`` in [-1, 1] (eq. 1).

    With ``p+ = sigmoid(s (c - m))`` and ``p- = sigmoid(-s (c + m))``, each element is::

        L = -(k / s) y (1 - p+)^gamma_pos log(max(p+, eps))
            - ((1 - k) / s) (1 - y) (1 - p-)^gamma_neg log(max(p-, eps))

    (the paper's extracted text swaps the gamma names; as in ASL, ``gamma_pos`` acts on
    positives and ``gamma_neg`` on negatives, as in ASL). Feed it the raw cosines of
    ``keras_mld.layers.CosineDense`` (not scaled by ``s``). At inference,
    ``sigmoid(s * c)`` is the matching probability.

    Reduction as ``AsymmetricLoss``: sum over classes (``call`` returns one value per
    sample), then the Keras mean over the batch. ``y_true == -1`` entries are ignored
    (zero loss and gradient). Always computed in float32.

    Numerics (same math as the formula): ``log p+ = log_sigmoid(s (c - m))``,
    ``log p- = log_sigmoid(-s (c + m))``, ``(1 - p±)^g = exp(g * log_sigmoid(-z±))``, and
    ``log(max(p, eps)) = max(log p, log eps)``; ``eps=0`` disables the clamp (the
    log-sigmoid form is finite everywhere).

    Differences from the official OpenVINO training_extensions implementation
    (``AsymmetricAngularLossWithIgnore``): that one takes already-scaled logits ``s c``
    (its head multiplies by ``s``), has no ``1/s`` factor, no margin ``m``, and an extra
    negative-probability clip (default 0.05, k default 0.8); this class follows the paper.

    Per-dataset presets (paper, section 4): ``AAMLoss.preset("coco" | "voc" | "nus_wide" |
    "vg500", **overrides)``; the optimiser learning rates are in ``AAM_PRESETS`` for
    training recipes.

    Args:
        s: scale, > 0.
        m: angular margin (a finite number; the paper uses 0).
        k: positive/negative balance in [0, 1].
        gamma_neg, gamma_pos: focusing exponents, >= 0.
        eps: clamp of the log arguments, in [0, 1).
        reduction, name: as for ``keras.losses.Loss``.

    Examples:
        >>> import numpy as np
        >>> from keras_mld.losses import AAMLoss
        >>> loss = AAMLoss.preset("coco")            # s=23, gamma_neg=1, gamma_pos=0, m=0, k=0.7
        >>> cosines = np.array([[0.9, -0.8]], "float32")
        >>> float(loss(np.array([[1.0, 0.0]]), cosines)) < float(loss(np.array([[0.0, 1.0]]), cosines))
        True
    """

    def __init__(self, s=23.0, m=0.0, k=0.7, gamma_neg=1.0, gamma_pos=0.0, eps=1e-8,
                 reduction="sum_over_batch_size", name=None):
        owner = type(self).__name__
        self.s = check_number(owner, "s", s, low=0.0, low_open=True,
                               accepted="a finite number > 0")
        self.m = check_number(owner, "m", m, accepted="a finite number")
        self.k = check_number(owner, "k", k, low=0.0, high=1.0,
                               accepted="a number in [0, 1]")
        self.gamma_neg = check_gamma(owner, "gamma_neg", gamma_neg)
        self.gamma_pos = check_gamma(owner, "gamma_pos", gamma_pos)
        self.eps = check_eps(owner, eps)
        super().__init__(reduction=reduction, name=name)

    @classmethod
    def preset(cls, dataset, **overrides):
        """AAMLoss with the paper's hyper-parameters for ``dataset`` (see ``AAM_PRESETS``)."""
        if dataset not in AAM_PRESETS:
            raise ValueError(f"AAMLoss: dataset must be one of {sorted(AAM_PRESETS)}, "
                             f"got {dataset!r}")
        kwargs = {key: v for key, v in AAM_PRESETS[dataset].items() if key != "learning_rate"}
        kwargs.update(overrides)
        return cls(**kwargs)

    def elementwise(self, y_true, y_pred):
        """Per-element loss (same shape as ``y_pred``), zero at ignored entries."""
        c = float32(y_pred)
        y, valid = split_ignore(y_true)
        z_pos = self.s * (c - self.m)
        z_neg = -self.s * (c + self.m)
        term_pos = clamped_log(ops.log_sigmoid(z_pos), self.eps)
        w_pos = pow_from_log(ops.log_sigmoid(-z_pos), self.gamma_pos)
        if w_pos is not None:
            term_pos = term_pos * w_pos
        term_neg = clamped_log(ops.log_sigmoid(z_neg), self.eps)
        w_neg = pow_from_log(ops.log_sigmoid(-z_neg), self.gamma_neg)
        if w_neg is not None:
            term_neg = term_neg * w_neg
        loss = -(self.k / self.s) * y * term_pos - ((1.0 - self.k) / self.s) * (1.0 - y) * term_neg
        return loss * valid

    def call(self, y_true, y_pred):
        return ops.sum(self.elementwise(y_true, y_pred), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(s=self.s, m=self.m, k=self.k, gamma_neg=self.gamma_neg,
                      gamma_pos=self.gamma_pos, eps=self.eps)
        return config
