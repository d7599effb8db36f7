"""What the two official-training fixture scripts for the transformer heads share
(``make_official_training_fixtures_query2label.py``, ``make_official_training_fixtures_ctran.py``):
the fixed batches, their conversion to torch, the state dump and attribute patching.
Needs torch; nothing official is read here."""
import contextlib

import numpy as np
import torch

BATCH, SIZE, CLASSES, STEPS = 8, 32, 10, 2


def state(module):
    """Floating-point state, without Query2Label's constant sine-encoding buffer."""
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()
            if v.dtype.is_floating_point and not k.endswith(".pe")}


def batches(seed):
    rs = np.random.RandomState(seed)
    # 16 grey levels per channel: the fixture stays small (zlib), the images random
    x = (17 * rs.randint(0, 16, (STEPS, BATCH, SIZE, SIZE, 3))).astype("uint8")
    y = (rs.rand(STEPS, BATCH, CLASSES) < 0.3).astype("float32")
    return x, y


def images(xb):
    """NHWC uint8 -> NCHW float32 in [0, 1] (the tests divide by 255 likewise)."""
    return torch.from_numpy(xb.astype("float32") / 255.0).permute(0, 3, 1, 2).contiguous()


@contextlib.contextmanager
def patched(*triples):
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in triples]
    for obj, name, value in triples:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)
