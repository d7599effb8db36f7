"""The one checkpoint reader of every converter: PyTorch-style weight files into
``{name: numpy.ndarray}`` without running code.

``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` / ``.tar`` (PyTorch's zip format): with
``torch.load(weights_only=True)`` when torch is installed, else with a restricted unpickler
that only rebuilds tensors (:mod:`keras_mld.checkpoints.pth`); ``.safetensors`` and ``.npz``
by :mod:`keras_mld.checkpoints.formats`, sizes checked before allocating. Every refusal is a
``ValueError`` naming the file. :func:`read_checkpoint` unwraps a
checkpoint dict (weights under ``"model"``, ``"state_dict"`` or ``"state_dict_ema"``), keeps
what else the checkpoint says (``idx_to_class``, ``class_names``), drops BatchNorm step
counters and DataParallel's ``module.`` prefix; :func:`read_state_dict` returns the weights.
"""
import contextlib
import os

import numpy as np

from keras_mld.checkpoints.formats import (  # noqa: F401  (check_size: public here too)
    check_size, checkpoint_error, read_npz, read_safetensors)
from keras_mld.checkpoints.pth import VIEW_AMPLIFICATION, read_pth_without_torch

DEFAULT_MAX_BYTES = 4 * 2 ** 30  # refuse files whose (uncompressed) content exceeds 4 GiB

# official ML-Decoder: "model"; timm: "state_dict" (and "state_dict_ema" beside it)
WRAPPER_KEYS = ("model", "state_dict", "state_dict_ema")
EXTENSIONS = (".pth", ".pt", ".bin", ".ckpt", ".tar", ".safetensors", ".npz")


def _guarded(path, read, *args):
    """``read(path, *args)`` with every failure a ``ValueError`` naming ``path``: a damaged
    file can break zipfile, zlib, numpy or pickle in many ways (BadZipFile, EOFError, OSError,
    MemoryError, RecursionError, ...), none of which a caller can catch by contract."""
    try:
        return read(path, *args)
    except ValueError as e:
        if repr(path) in str(e):
            raise
        raise checkpoint_error(path, str(e)) from None
    except Exception as e:
        raise checkpoint_error(path, f"{type(e).__name__}: {e}") from None


def _read_pth_with_torch(path, max_bytes):
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    # torch keeps stride-0 views as views; copying them out may not exceed what the built-in
    # reader allows (4 x the file's bytes, and max_bytes)
    limit = min(max_bytes, VIEW_AMPLIFICATION * os.path.getsize(path))
    total = [0]

    def convert(x):
        if isinstance(x, torch.Tensor):
            total[0] += x.numel() * (4 if x.dtype == torch.bfloat16 else x.element_size())
            if total[0] > limit:
                raise ValueError(f"its tensors would materialise more than {limit} bytes "
                                 f"(max_bytes={max_bytes}, or {VIEW_AMPLIFICATION} x the "
                                 "file's bytes: stride-0 or overlapping views)")
            x = x.detach()
            if x.dtype == torch.bfloat16:
                x = x.float()
            return x.numpy().copy()
        if isinstance(x, dict):
            return {k: convert(v) for k, v in x.items()}
        return x

    return convert(obj)


def _to_numpy(value):
    if hasattr(value, "detach"):  # a torch tensor (only when the caller passes one)
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return value


def _check_file(path):
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint: no such file {path!r} (expected an existing "
                         f"{', '.join(EXTENSIONS)} file)")


def _read_file(path, use_torch, max_bytes):
    _check_file(path)
    check_size(path, os.path.getsize(path), max_bytes)
    lower = path.lower()
    if lower.endswith(".safetensors"):
        return _guarded(path, read_safetensors, max_bytes)
    if lower.endswith(".npz"):
        return _guarded(path, read_npz, max_bytes)
    if not lower.endswith(EXTENSIONS):
        raise ValueError(f"checkpoint: path must end in {', '.join(EXTENSIONS[:-2])}, "
                         f".safetensors or .npz, got {path!r}")
    return read_pth(path, use_torch, max_bytes)


@contextlib.contextmanager
def errors_naming(source):
    """Inside it, a converter's refusal of the weights of ``source`` (a path) names the file:
    ``ValueError("cannot convert checkpoint '<file>': ...")``; the errors a malformed state
    dict can raise in shape arithmetic (``TypeError``, ``IndexError``, ``KeyError``) become
    that ``ValueError`` too. A dict source leaves errors as they are."""
    try:
        yield
    except (ValueError, TypeError, IndexError, KeyError) as e:
        if not isinstance(source, (str, os.PathLike)):
            raise
        path = os.fspath(source)
        if isinstance(e, ValueError) and repr(path) in str(e):
            raise
        why = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        raise ValueError(f"cannot convert checkpoint {path!r}: {why}") from None


def read_checkpoint(source, use_torch=None, max_bytes=DEFAULT_MAX_BYTES):
    """``source`` (a path, or a checkpoint already loaded as a dict) -> ``(state, meta)``.

    ``state`` maps parameter names to ``numpy.ndarray`` (bfloat16 as float32): the checkpoint
    dict is unwrapped (weights under ``"model"``, ``"state_dict"`` or ``"state_dict_ema"``,
    the first present), non-tensor entries and BatchNorm step counters
    (``num_batches_tracked``) are dropped and a ``module.`` prefix (DataParallel) is removed.
    ``meta`` holds what else the checkpoint carries: ``idx_to_class`` (an official
    ML-Decoder checkpoint) and ``class_names`` (an ``.npz`` entry).

    Args:
        source: a file (see the module docstring for the formats) or a dict.
        use_torch: for ``.pth``: ``None`` (default) = ``torch.load(weights_only=True)`` when
            torch is installed, else the built-in reader; ``False``: always the built-in one.
        max_bytes: refuse a file whose content exceeds this many bytes (default 4 GiB).
    """
    if isinstance(source, (str, os.PathLike)):
        where = os.fspath(source)
        raw = _read_file(where, use_torch, max_bytes)
    elif isinstance(source, dict):
        where, raw = "<dict>", source
    else:
        raise ValueError(f"checkpoint: expected a path or a dict (state dict or checkpoint), "
                         f"got {type(source).__name__}")
    if not isinstance(raw, dict):
        raise checkpoint_error(
            where, f"expected a state dict (name -> tensor), got {type(raw).__name__}")
    meta = {}
    if "idx_to_class" in raw:
        meta["idx_to_class"] = raw["idx_to_class"]
    for key in WRAPPER_KEYS:
        if isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    state = {}
    for k, v in raw.items():
        if not isinstance(k, str):
            raise checkpoint_error(where, f"state dict key {k!r} is a {type(k).__name__}, "
                                          "expected a str (a parameter name)")
        v = _to_numpy(v)
        if k == "class_names":
            meta["class_names"] = [str(c) for c in np.asarray(v).ravel()]
            continue
        if not isinstance(v, np.ndarray) or k.endswith("num_batches_tracked"):
            continue  # metadata / BN step counters: nothing a Keras weight holds
        state[k[len("module."):] if k.startswith("module.") else k] = v
    if not state:
        raise checkpoint_error(where, "no tensors found (expected a state dict, or a dict with "
                                      "'model' / 'state_dict' holding one)")
    return state, meta


def read_state_dict(path, use_torch=None, max_bytes=DEFAULT_MAX_BYTES):
    """Weights of a PyTorch checkpoint as ``{name: numpy.ndarray}`` (no code is run).

    Args:
        path: a ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` / ``.tar`` (PyTorch zip format),
            ``.safetensors`` or ``.npz`` file, read and unwrapped by :func:`read_checkpoint`.
        use_torch: ``None`` (default) = use ``torch.load(weights_only=True)`` when torch is
            installed, else the built-in reader; ``False``: always the built-in reader.
        max_bytes: refuse a file whose content exceeds this many bytes (default 4 GiB).

    bfloat16 tensors come back as float32; other dtypes are kept.

    Examples:
        >>> import numpy as np
        >>> from keras_mld.convert import read_state_dict
        >>> np.savez("head.npz", **{"fc.weight": np.ones((3, 4), "float32"),
        ...                         "fc.bias": np.zeros(3, "float32")})
        >>> weights = read_state_dict("head.npz")
        >>> sorted(weights), weights["fc.weight"].shape
        (['fc.bias', 'fc.weight'], (3, 4))
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"read_state_dict: path must be a file path, got {type(path).__name__}")
    return read_checkpoint(path, use_torch, max_bytes)[0]


def read_pth(path, use_torch=None, max_bytes=DEFAULT_MAX_BYTES):
    """The whole object of a PyTorch zip checkpoint, tensors as ``numpy.ndarray``.

    Unlike :func:`read_state_dict` nothing is unwrapped or dropped: plain entries beside the
    weights (e.g. an official ML-Decoder checkpoint's ``idx_to_class``) are kept. Same
    safety rules: ``torch.load(weights_only=True)`` when torch is installed (or
    ``use_torch=True``), else the restricted reader; no code from the file runs.
    """
    path = os.fspath(path)
    _check_file(path)
    check_size(path, os.path.getsize(path), max_bytes)
    if use_torch is None:
        try:
            import torch  # noqa: F401
            use_torch = True
        except ImportError:
            use_torch = False
    if use_torch:
        return _guarded(path, _read_pth_with_torch, max_bytes)
    return _guarded(path, read_pth_without_torch, max_bytes)


def strip_prefix(state_dict, prefix="module."):
    """``state_dict`` with ``prefix`` removed from the names that start with it (DDP's
    ``module.``); a name that is not a ``str`` is refused."""
    if not isinstance(state_dict, dict):
        raise ValueError(f"state_dict: expected a dict of name -> array, got "
                         f"{type(state_dict).__name__}")
    bad = [k for k in state_dict if not isinstance(k, str)]
    if bad:
        raise ValueError(f"state_dict: key {bad[0]!r} is a {type(bad[0]).__name__}, expected "
                         "a str (a parameter name)")
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}
