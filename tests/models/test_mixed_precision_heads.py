"""Every built head under ``mixed_float16``: logits and ASL loss against the float32 model
with the same weights (the layer harness checks each layer alone)."""
import keras
import numpy as np
import pytest

from keras_mld.losses import AsymmetricLoss
from keras_mld.models.builder import build
from tests.support.tiny import SMALL_HEAD_KWARGS, tiny_backbone

# measured (TF, CPU): max |fp16 - fp32| / max |fp32 logit| 2.2e-3 (ctran), 1.2e-3
# (query2label, mldecoder), 1.3e-4 (gap); loss 1.2e-4 relative at most: about 3x and 4x
LOGIT_TOL, LOSS_RTOL = 6e-3, 5e-4


def _build(head, policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        return build(tiny_backbone(), head=head, num_classes=6, input_shape=(32, 32, 3),
                     **SMALL_HEAD_KWARGS[head])
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("head", sorted(SMALL_HEAD_KWARGS))
def test_fp16_logits_and_loss_match_fp32(head):
    ref = _build(head, "float32")
    mixed = _build(head, "mixed_float16")
    mixed.set_weights(ref.get_weights())
    rs = np.random.RandomState(0)
    x = rs.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = (rs.rand(4, 6) < 0.4).astype("float32")
    a = keras.ops.convert_to_numpy(ref(x, training=False)).astype("float64")
    b = keras.ops.convert_to_numpy(mixed(x, training=False)).astype("float64")
    scale = max(1.0, np.abs(a).max())
    err = np.abs(a - b).max() / scale
    assert err < LOGIT_TOL, f"{head}: fp16 logits off by {err:.2e} of the scale"
    loss = AsymmetricLoss()
    la, lb = float(loss(y, a)), float(loss(y, b))
    assert abs(la - lb) <= LOSS_RTOL * abs(la), (head, la, lb)
