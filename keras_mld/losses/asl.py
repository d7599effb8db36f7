"""Asymmetric Loss (ASL) for multi-label and single-label classification, on logits.

Paper: Ben-Baruch, Ridnik et al., "Asymmetric Loss For Multi-Label Classification"
(arXiv:2009.14119),
ICCV 2021, section 3 (eqs. 3-7). ``keras.ops`` only.

Shared conventions of the losses in this package (helpers in ``common.py``, also used by
``aam.py``):

- ``y_true == -1`` marks an entry to ignore: it contributes zero loss and zero gradient
  (partial labels, C-Tran label-mask training).
- Everything is computed in float32 whatever the input dtype (float16 / bfloat16 logits in,
  float32 loss out); the loss's own ``dtype`` is fixed to float32.
- ``call`` returns one value per sample (sum over the class axis); with the default
  ``reduction="sum_over_batch_size"`` Keras then takes the mean over the batch.
"""
import keras
from keras import ops

from keras_mld.losses.common import (Float32Loss, check_eps, check_gamma, clamped_log, float32,
                                     pow_from_log, safe_pow, split_ignore, weighted)
from keras_mld.validation import check_bool, check_number

# --------------------------------------------------------------------------- multi-label
@keras.saving.register_keras_serializable(package="keras_mld")
class AsymmetricLoss(Float32Loss):
    """Asymmetric Loss (ASL) for multi-label classification on logits (arXiv:2009.14119, sec. 3).

    With ``p = sigmoid(x)`` and the shifted probability of negatives
    ``p_m = max(p - clip, 0)`` (``clip=0`` or ``None`` disables the shift), each element is::

        L = -( y (1 - p)^gamma_pos log(max(p, eps))
               + (1 - y) p_m^gamma_neg log(max(1 - p_m, eps)) )

    Reduction: sum over the class axis (``call`` returns one value per sample), then, with
    the default ``reduction="sum_over_batch_size"``, the mean over the batch. The official
    implementation (Alibaba-MIIL/ASL ``AsymmetricLoss``) sums over the batch as well, so
    ``official_loss == our_loss * batch_size``; learning rates tuned for it need rescaling.

    Presets: official training defaults ``gamma_neg=4, gamma_pos=0, clip=0.05`` (our
    defaults). Query2Label's (``AsymmetricLossOptimized`` as its ``main_mlc.py`` runs it
    with the README's flags) is ``AsymmetricLoss(gamma_neg=2, gamma_pos=0, clip=0,
    eps=1e-5, stop_focal_gradient=True, scale=1000 / N)``: the official loss is the sum
    over the batch and the N classes divided by the batch size, times ``1000 / N``.

    Args:
        gamma_neg: focusing exponent of negatives, >= 0.
        gamma_pos: focusing exponent of positives, >= 0.
        clip: probability margin of negatives in [0, 1); ``None`` or 0 disables it.
        eps: clamp of the log arguments, in [0, 1) (0: no clamp).
        stop_focal_gradient: compute the focusing weights ``(1-p)^g+`` and ``p_m^g-`` under
            ``stop_gradient`` (official ``disable_torch_grad_focal_loss``); the loss value
            is unchanged.
        scale: a factor > 0 on every element's loss (default 1; Query2Label: ``1000 / N``).
        reduction, name: as for ``keras.losses.Loss``.

    Labels ``y_true`` have the shape of ``y_pred``, values in {0, 1} and -1 for entries to
    ignore (zero loss, zero gradient). Soft labels in [0, 1] follow the formula above (the
    official code instead mixes the two focusing weights; identical for binary labels).

    Numerics (same math as above): ``log p = log_sigmoid(x)``,
    ``log(1 - p) = log_sigmoid(-x)``, ``1 - p_m = min(sigmoid(-x) + clip, 1)``,
    ``(1 - p)^g = exp(g * log_sigmoid(-x))``; clamping ``log(max(v, eps))`` is done as
    ``max(log v, log eps)``. Always computed in float32.

    Examples:
        >>> import numpy as np
        >>> from keras_mld.losses import AsymmetricLoss
        >>> loss = AsymmetricLoss(gamma_neg=4, gamma_pos=0, clip=0.05)
        >>> y_true, logits = np.array([[1.0, 0.0]]), np.zeros((1, 2), "float32")
        >>> # p = 0.5: -log(0.5) for the positive, 0.45**4 * -log(0.55) for the negative
        >>> by_hand = -np.log(0.5) - 0.45**4 * np.log(0.55)
        >>> round(float(loss(y_true, logits)), 4), round(float(by_hand), 4)
        (0.7177, 0.7177)
    """

    def __init__(self, gamma_neg=4.0, gamma_pos=0.0, clip=0.05, eps=1e-8,
                 stop_focal_gradient=False, scale=1.0, reduction="sum_over_batch_size",
                 name=None):
        owner = type(self).__name__
        self.scale = check_number(owner, "scale", scale, low=0.0, low_open=True,
                                  accepted="a number > 0")
        self.gamma_neg = check_gamma(owner, "gamma_neg", gamma_neg)
        self.gamma_pos = check_gamma(owner, "gamma_pos", gamma_pos)
        if clip is not None:
            clip = check_number(owner, "clip", clip, low=0.0, high=1.0, high_open=True,
                                 accepted="None or a number in [0, 1)")
        self.clip = clip
        self.eps = check_eps(owner, eps)
        self.stop_focal_gradient = check_bool(owner, "stop_focal_gradient",
                                               stop_focal_gradient)
        super().__init__(reduction=reduction, name=name)

    def elementwise(self, y_true, y_pred):
        """Per-element loss (same shape as ``y_pred``), zero at ignored entries."""
        x = float32(y_pred)
        y, valid = split_ignore(y_true)
        log_p = clamped_log(ops.log_sigmoid(x), self.eps)
        w_pos = pow_from_log(ops.log_sigmoid(-x), self.gamma_pos)
        if self.clip:
            p_m = ops.maximum(ops.sigmoid(x) - self.clip, 0.0)
            one_minus = ops.minimum(ops.sigmoid(-x) + self.clip, 1.0)
            log_not_p = clamped_log(ops.log(one_minus), self.eps)
            w_neg = safe_pow(p_m, self.gamma_neg)
        else:
            log_not_p = clamped_log(ops.log_sigmoid(-x), self.eps)
            w_neg = pow_from_log(ops.log_sigmoid(x), self.gamma_neg)
        stop = self.stop_focal_gradient
        loss = -(y * weighted(log_p, w_pos, stop)
                 + (1.0 - y) * weighted(log_not_p, w_neg, stop))
        if self.scale != 1.0:
            loss = loss * self.scale
        return loss * valid

    def call(self, y_true, y_pred):
        return ops.sum(self.elementwise(y_true, y_pred), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(gamma_neg=self.gamma_neg, gamma_pos=self.gamma_pos, clip=self.clip,
                      eps=self.eps, stop_focal_gradient=self.stop_focal_gradient,
                      scale=self.scale)
        return config


# --------------------------------------------------------------------------- single-label
@keras.saving.register_keras_serializable(package="keras_mld")
class AsymmetricLossSingleLabel(Float32Loss):
    """Asymmetric loss for single-label (softmax) classification on logits (arXiv:2009.14119).

    With ``log p = log_softmax(x)`` over the class axis, focusing weights
    ``w_j = (1 - p_j)^gamma_pos`` for the target class and ``w_j = p_j^gamma_neg`` for the
    others (i.e. ``(1 - p_t)^gamma`` with ``p_t = p`` for the target and ``1 - p`` for
    non-targets, as in the official ``ASLSingleLabel``), and label-smoothed targets
    ``t_j = onehot_j (1 - label_smoothing) + label_smoothing / N``, the per-sample loss is::

        L = - sum_j t_j w_j log p_j

    Reduction: ``call`` returns one value per sample; Keras averages over the batch (the
    official default ``reduction='mean'`` does the same).

    ``y_true`` formats, detected from static ranks/shapes:

    - integer class ids ``[B]`` (rank of ``y_pred`` minus one), or ``[B, 1]`` when
      ``y_pred`` is ``[B, N]`` with ``N > 1``; an id of -1 ignores the whole sample
      (zero loss, zero gradient);
    - one-hot ``[B, N]`` (same shape as ``y_pred``); entries equal to -1 are dropped from
      the sum over classes (softmax still normalises over all N classes); a row of all -1
      ignores the sample. One-hot rows are expected to be binary.

    Args:
        gamma_pos: focusing exponent of the target class, >= 0.
        gamma_neg: focusing exponent of the non-target classes, >= 0.
        label_smoothing: label-smoothing epsilon in [0, 1] (official ``eps``, default 0.1).
        stop_focal_gradient: compute the focusing weights under ``stop_gradient``
            (the official code does not; default False).
        reduction, name: as for ``keras.losses.Loss``.

    Always computed in float32; ``p_j^g`` is evaluated as ``exp(g log p_j)``.

    Examples:
        >>> import numpy as np
        >>> from keras_mld.losses import AsymmetricLossSingleLabel
        >>> loss = AsymmetricLossSingleLabel(label_smoothing=0.0, gamma_pos=0.0, gamma_neg=0.0)
        >>> # without focusing or smoothing it is the cross-entropy: log(3) for uniform logits
        >>> round(float(loss(np.array([[0.0, 1.0, 0.0]]), np.zeros((1, 3), "float32"))), 4)
        1.0986
    """

    def __init__(self, gamma_pos=0.0, gamma_neg=4.0, label_smoothing=0.1,
                 stop_focal_gradient=False, reduction="sum_over_batch_size", name=None):
        owner = type(self).__name__
        self.gamma_pos = check_gamma(owner, "gamma_pos", gamma_pos)
        self.gamma_neg = check_gamma(owner, "gamma_neg", gamma_neg)
        self.label_smoothing = check_number(owner, "label_smoothing", label_smoothing,
                                             low=0.0, high=1.0,
                                             accepted="a number in [0, 1]")
        self.stop_focal_gradient = check_bool(owner, "stop_focal_gradient",
                                               stop_focal_gradient)
        super().__init__(reduction=reduction, name=name)

    def _targets(self, y_true, num_classes, pred_rank):
        """``(onehot, valid)`` as float32 ``[..., N]`` tensors."""
        y_true = float32(y_true)
        rank = len(y_true.shape)
        sparse = rank == pred_rank - 1 or (
            rank == pred_rank and y_true.shape[-1] == 1 and num_classes != 1)
        if not sparse:
            return split_ignore(y_true)
        if rank == pred_rank:
            y_true = ops.squeeze(y_true, axis=-1)
        valid = ops.not_equal(y_true, -1.0)
        ids = ops.cast(ops.where(valid, y_true, 0.0), "int32")
        onehot = ops.one_hot(ids, num_classes, dtype="float32")
        valid = ops.expand_dims(ops.cast(valid, "float32"), -1)
        return onehot, ops.broadcast_to(valid, ops.shape(onehot))

    def call(self, y_true, y_pred):
        x = float32(y_pred)
        num_classes = x.shape[-1]
        if num_classes is None:
            raise ValueError("AsymmetricLossSingleLabel: the class axis of y_pred must "
                             "have a static size")
        onehot, valid = self._targets(y_true, num_classes, len(x.shape))
        log_p = ops.log_softmax(x, axis=-1)
        w_pos = safe_pow(1.0 - ops.exp(log_p), self.gamma_pos)
        w_neg = pow_from_log(log_p, self.gamma_neg)
        w_pos = 1.0 if w_pos is None else w_pos
        w_neg = 1.0 if w_neg is None else w_neg
        weight = onehot * w_pos + (1.0 - onehot) * w_neg
        if self.stop_focal_gradient:
            weight = ops.stop_gradient(weight)
        ls = self.label_smoothing
        targets = onehot * (1.0 - ls) + ls / num_classes
        return -ops.sum(targets * weight * log_p * valid, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg,
                      label_smoothing=self.label_smoothing,
                      stop_focal_gradient=self.stop_focal_gradient)
        return config
