"""timm / official TResNet state dicts -> :mod:`keras_mld.models.tresnet` weights.

Two layouts are accepted (detected from the keys):

* timm (``body.conv1.conv.weight``, ``body.layer1.0.conv1.bn.weight``, ...): plain
  batch norm, weights copied as they are;
* the official TResNet / ML-Decoder code (Alibaba-MIIL; ``body.conv1.0.weight``,
  ``body.layer2.0.conv1.0.1.weight``, ...): InPlaceABN, whose scale is ``|w| + eps``
  (eps = 1e-5), so every norm weight becomes ``|w| + 1e-5`` -- what the official
  ``InplacABN_to_ABN`` and timm's ``checkpoint_filter_fn`` do.

PyTorch layouts are converted to Keras: conv ``[O, I, kh, kw] -> [kh, kw, I, O]``,
linear ``[O, I] -> [I, O]``. Keras layer names are the timm names with ``.`` -> ``_``.
"""
import re

import keras
import numpy as np

from keras_mld.checkpoints.loader import WeightLoader
from keras_mld.checkpoints.reader import errors_naming, read_checkpoint
from keras_mld.models.tresnet.tresnet import tresnet

INPLACE_ABN_EPS = 1e-5


def is_official_layout(state):
    """True for the official (InPlaceABN, Sequential-indexed) key layout."""
    return "body.conv1.0.weight" in state and "body.conv1.conv.weight" not in state


def to_timm_layout(state):
    """Renames official TResNet keys to timm's and turns InPlaceABN weights into BN
    weights (``|w| + 1e-5``); a timm state dict is returned unchanged. Non-backbone keys
    (``head.decoder.*``) keep their names."""
    if not is_official_layout(state):
        return dict(state)
    out = {}
    for k, v in state.items():
        if k.startswith("body."):
            k = re.sub(r"\.conv(\d+)\.0\.0\.", r".conv\1.conv.", k)   # conv inside AA Sequential
            k = re.sub(r"\.conv(\d+)\.0\.1\.", r".conv\1.bn.", k)
            k = re.sub(r"\.conv(\d+)\.0\.", r".conv\1.conv.", k)
            k = re.sub(r"\.conv(\d+)\.1\.", r".conv\1.bn.", k)
            k = re.sub(r"\.downsample\.(\d+)\.0\.", r".downsample.\1.conv.", k)
            k = re.sub(r"\.downsample\.(\d+)\.1\.", r".downsample.\1.bn.", k)
            if k.endswith(".bn.weight"):
                v = np.abs(v) + INPLACE_ABN_EPS
        out[k] = v
    return out


def _weight(state, key, ndim=None):
    """``state[key]`` as a real (non-empty) array, else a ValueError naming ``key``."""
    w = np.asarray(state[key])
    if w.size == 0 or (ndim is not None and w.ndim != ndim):
        raise ValueError(f"state dict: {key} has shape {w.shape}; expected a non-empty "
                         f"{ndim or ''}{'-d ' if ndim else ''}weight")
    return w


def infer_config(state):
    """``{"layers", "width_factor", "v2", "num_classes"}`` of a TResNet state dict (either
    layout); ``num_classes`` is None without a ``head.fc``.

    The architecture is read from real weights, never from declared dims of empty arrays:
    the stem conv must be ``[planes, 48, 3, 3]`` and every block's ``conv1`` must hold a
    non-empty ``[stage planes, input channels, k, k]`` kernel, so the model built is never
    more than a small multiple of the weights in the file (a 466 KB file cannot declare a
    2048-wide network, nor 2,000 empty entries a 2,000-block one)."""
    state = to_timm_layout(state)
    if "body.conv1.conv.weight" not in state:
        raise ValueError("state dict: not a TResNet (no body.conv1 weight); expected timm or "
                         "official TResNet parameter names")
    stem = _weight(state, "body.conv1.conv.weight", 4)
    planes = int(stem.shape[0])
    if stem.shape[1:] != (48, 3, 3):  # space-to-depth (4 x 4 x RGB) into a 3x3 conv
        raise ValueError(f"state dict: body.conv1.conv.weight has shape {stem.shape}; "
                         "expected [planes, 48, 3, 3]")
    v2 = "body.layer1.0.conv3.conv.weight" in state
    if v2 and planes % 8:
        raise ValueError(f"state dict: Bottleneck stem with {planes} channels (not a multiple "
                         "of 8) is not a timm v2 / official TResNet-L layout")
    layers, in_ch = [], planes
    for stage in range(1, 5):
        ids = {int(m.group(1)) for k in state
               for m in [re.match(rf"body\.layer{stage}\.(\d{{1,6}})\.", k)] if m}
        if not ids or ids != set(range(len(ids))):
            raise ValueError(f"state dict: stage layer{stage} has blocks {sorted(ids)[:8]}; "
                             "expected 0..n-1")
        bottleneck = v2 or stage >= 3
        stage_planes = planes * 2 ** (stage - 1)
        for i in range(len(ids)):
            key = f"body.layer{stage}.{i}.conv1.conv.weight"
            if key not in state:
                raise ValueError(f"state dict: block layer{stage}.{i} has no {key}")
            w = _weight(state, key, 4)
            if w.shape[:2] != (stage_planes, in_ch):
                raise ValueError(f"state dict: {key} has shape {w.shape}; the stem's {planes} "
                                 f"channels make it [{stage_planes}, {in_ch}, k, k]")
            in_ch = stage_planes * (4 if bottleneck else 1)
        layers.append(len(ids))
    fc = state.get("head.fc.weight")
    return {"layers": tuple(layers), "width_factor": planes / 64.0, "v2": v2,
            "num_classes": None if fc is None else int(_weight(state, "head.fc.weight").shape[0])}


def load_weights(model, state, strict=True, allow_nonfinite=False):
    """Copies a TResNet state dict (timm or official layout) into a Keras model built by
    :func:`keras_mld.models.tresnet.tresnet` with the same configuration.

    Every Conv2D / BatchNormalization / Dense layer of ``model`` is filled; ``head.fc``
    only when the model has ``include_top=True``. ``strict``: raise if a ``body.*`` /
    ``head.fc.*`` key is left unused. NaN / inf weights and negative BatchNorm variances are
    refused with the key named unless ``allow_nonfinite=True``. Returns the set of keys used.
    """
    loader = WeightLoader(to_timm_layout(state), "load_weights", allow_nonfinite)
    for layer in model.layers:
        prefix = layer.name.replace("_", ".")
        if isinstance(layer, keras.layers.Conv2D):
            loader.conv2d(layer, prefix)
        elif isinstance(layer, keras.layers.BatchNormalization):
            loader.batch_norm(layer, prefix)
        elif isinstance(layer, keras.layers.Dense):
            loader.dense(layer, prefix)
        elif layer.weights:
            raise ValueError(f"load_weights: unexpected layer with weights {layer.name!r} "
                             "(is this a keras_mld.models.tresnet model?)")
    if strict:
        include_top = any(layer.name == "head_fc" for layer in model.layers)
        loader.check_all_used(within=("body.", "head.fc.") if include_top else ("body.",))
    return loader.used


def convert_tresnet(source, input_shape=(224, 224, 3), include_top=False, name="tresnet",
                    allow_nonfinite=False):
    """A timm or official TResNet checkpoint (path or dict) -> a Keras TResNet with its
    weights (configuration read from the state dict). ``include_top`` also converts the
    ``head.fc`` classifier (GAP + Dense); ``allow_nonfinite`` as in :func:`load_weights`."""
    state, _ = read_checkpoint(source)
    with errors_naming(source):
        cfg = infer_config(state)
        if include_top and cfg["num_classes"] is None:
            raise ValueError("include_top: the state dict has no head.fc classifier")
        model = tresnet(layers=cfg["layers"], width_factor=cfg["width_factor"], v2=cfg["v2"],
                        include_top=include_top, num_classes=cfg["num_classes"] or 1000,
                        input_shape=input_shape, name=name)
        load_weights(model, state, allow_nonfinite=allow_nonfinite)
    return model
