"""timm / official TResNet state dicts -> :mod:`keras_mld.tresnet` weights.

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
import os
import re

import numpy as np

from keras_mld.convert.state_dict import DEFAULT_MAX_BYTES, _check_size

INPLACE_ABN_EPS = 1e-5
_NORM_SUFFIXES = ("weight", "bias", "running_mean", "running_var")


def _to_numpy(value):
    if hasattr(value, "detach"):  # a torch tensor (only when the caller passes one)
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def read_checkpoint(source):
    """``source`` (a mapping or a path) -> ``(state_dict, meta)``.

    ``state_dict`` maps parameter names to float ``np.ndarray``; ``meta`` holds what else
    the checkpoint carries (``idx_to_class`` for an official ML-Decoder checkpoint,
    ``class_names`` for an ``.npz``). A checkpoint dict ``{"model": ...}`` or
    ``{"state_dict": ...}`` is unwrapped; a ``module.`` prefix (DataParallel) is dropped.

    Files: ``.npz`` (numpy, no pickle), ``.safetensors`` (the ``safetensors`` package) and
    ``.pth`` / ``.pt`` / ``.bin`` (:func:`keras_mld.convert.state_dict.read_pth`:
    ``torch.load(..., weights_only=True)`` when torch is installed, else a restricted
    reader; no code from the file runs).
    """
    meta = {}
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise ValueError(f"checkpoint: no such file {path!r}")
        ext = os.path.splitext(path)[1].lower()
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                # bounded like read_state_dict: a deflate bomb is refused before it expands
                _check_size(path, sum(i.file_size for i in z.zip.infolist()), DEFAULT_MAX_BYTES)
                raw = {k: z[k] for k in z.files}
            if "class_names" in raw:
                meta["class_names"] = [str(c) for c in raw.pop("class_names")]
        elif ext == ".safetensors":
            try:
                from safetensors.numpy import load_file  # the format's own reader
            except ImportError:
                raise ValueError(f"checkpoint: reading {path!r} needs the safetensors package "
                                 "(pip install keras-mld[convert])") from None
            raw = load_file(path)
        elif ext in (".pth", ".pt", ".bin"):
            raw = _torch_load(path)
        else:
            raise ValueError(f"checkpoint: expected a .pth, .pt, .bin, .safetensors or .npz file, "
                             f"got {path!r}")
    elif isinstance(source, dict):
        raw = source
    else:
        raise ValueError(f"checkpoint: expected a path or a dict (state dict or checkpoint), "
                         f"got {type(source).__name__}")
    if "idx_to_class" in raw:
        meta["idx_to_class"] = raw["idx_to_class"]
    for key in ("model", "state_dict", "state_dict_ema"):
        if key in raw and isinstance(raw[key], dict):
            raw = raw[key]
            break
    state = {}
    for k, v in raw.items():
        if k == "class_names":
            meta["class_names"] = [str(c) for c in _to_numpy(v)]
            continue
        if not hasattr(v, "shape") or k.endswith("num_batches_tracked"):
            continue  # metadata / BN step counters: nothing a Keras weight holds
        k = k[len("module."):] if k.startswith("module.") else k
        state[k] = _to_numpy(v)
    if not state:
        raise ValueError("checkpoint: found no tensors (expected a state dict, or a dict with "
                         "'model' / 'state_dict' holding one)")
    return state, meta


def _torch_load(path):
    # torch (optional) with weights_only=True when installed, else the restricted reader of
    # keras_mld.convert.state_dict: either way no code from the file runs
    from keras_mld.convert.state_dict import read_pth

    try:
        return read_pth(path)
    except ValueError:
        raise
    except Exception as err:  # torch raises UnpicklingError / RuntimeError subclasses
        raise ValueError(f"checkpoint: {path!r} could not be read with torch.load(weights_only=True) "
                         f"(it must hold only tensors and plain containers): {err}") from err


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


def infer_config(state):
    """``{"layers", "width_factor", "v2", "num_classes"}`` of a TResNet state dict (either
    layout); ``num_classes`` is None without a ``head.fc``."""
    state = to_timm_layout(state)
    if "body.conv1.conv.weight" not in state:
        raise ValueError("state dict: not a TResNet (no body.conv1 weight); expected timm or "
                         "official TResNet parameter names")
    layers = []
    for stage in range(1, 5):
        ids = {int(m.group(1)) for k in state
               for m in [re.match(rf"body\.layer{stage}\.(\d+)\.", k)] if m}
        if not ids or ids != set(range(len(ids))):
            raise ValueError(f"state dict: stage layer{stage} has blocks {sorted(ids)}; expected 0..n-1")
        layers.append(len(ids))
    planes = int(state["body.conv1.conv.weight"].shape[0])
    v2 = "body.layer1.0.conv3.conv.weight" in state
    if v2 and planes % 8:
        raise ValueError(f"state dict: Bottleneck stem with {planes} channels (not a multiple of 8) "
                         "is not a timm v2 / official TResNet-L layout")
    fc = state.get("head.fc.weight")
    return {"layers": tuple(layers), "width_factor": planes / 64.0, "v2": v2,
            "num_classes": None if fc is None else int(fc.shape[0])}


def _assign(variable, value, key):
    value = np.asarray(value, dtype="float32")
    if tuple(variable.shape) != value.shape:
        raise ValueError(f"state dict: {key} has shape {value.shape}, the Keras weight "
                         f"{variable.path} expects {tuple(variable.shape)}")
    variable.assign(value)


def load_weights(model, state, strict=True):
    """Copies a TResNet state dict (timm or official layout) into a Keras model built by
    :func:`keras_mld.tresnet.tresnet` with the same configuration.

    Every Conv2D / BatchNormalization / Dense layer of ``model`` is filled; ``head.fc``
    only when the model has ``include_top=True``. ``strict``: raise if a ``body.*`` /
    ``head.fc.*`` key is left unused. Returns the set of keys used.
    """
    import keras

    state = to_timm_layout(state)
    used = set()

    def take(key):
        if key not in state:
            raise ValueError(f"state dict: missing {key!r} (wrong variant or configuration?)")
        used.add(key)
        return state[key]

    for layer in model.layers:
        prefix = layer.name.replace("_", ".")
        if isinstance(layer, keras.layers.Conv2D):
            _assign(layer.kernel, take(prefix + ".weight").transpose(2, 3, 1, 0), prefix + ".weight")
            if layer.use_bias:
                _assign(layer.bias, take(prefix + ".bias"), prefix + ".bias")
        elif isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = (take(f"{prefix}.{s}") for s in _NORM_SUFFIXES)
            for variable, value, s in zip((layer.gamma, layer.beta, layer.moving_mean,
                                           layer.moving_variance), (gamma, beta, mean, var),
                                          _NORM_SUFFIXES):
                _assign(variable, value, f"{prefix}.{s}")
        elif isinstance(layer, keras.layers.Dense):
            _assign(layer.kernel, take(prefix + ".weight").T, prefix + ".weight")
            _assign(layer.bias, take(prefix + ".bias"), prefix + ".bias")
        elif layer.weights:
            raise ValueError(f"load_weights: unexpected layer with weights {layer.name!r} "
                             "(is this a keras_mld.tresnet model?)")
    if strict:
        include_top = any(layer.name == "head_fc" for layer in model.layers)
        left = sorted(k for k in state if k not in used and (
            k.startswith("body.") or (include_top and k.startswith("head.fc."))))
        if left:
            raise ValueError(f"state dict: {len(left)} TResNet weights were not used, e.g. "
                             f"{left[:3]} (wrong variant or configuration?)")
    return used


def convert_tresnet(source, input_shape=(224, 224, 3), include_top=False, name="tresnet"):
    """A timm or official TResNet checkpoint (path or dict) -> a Keras TResNet with its
    weights (configuration read from the state dict). ``include_top`` also converts the
    ``head.fc`` classifier (GAP + Dense)."""
    from keras_mld.tresnet import tresnet

    state, _ = read_checkpoint(source)
    cfg = infer_config(state)
    if include_top and cfg["num_classes"] is None:
        raise ValueError("include_top: the state dict has no head.fc classifier")
    model = tresnet(layers=cfg["layers"], width_factor=cfg["width_factor"], v2=cfg["v2"],
                    include_top=include_top, num_classes=cfg["num_classes"] or 1000,
                    input_shape=input_shape, name=name)
    load_weights(model, state)
    return model
