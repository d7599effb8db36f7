"""The one checkpoint reader of every converter: PyTorch-style weight files into
``{name: numpy.ndarray}`` without running code.

``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` / ``.tar`` (PyTorch's zip format): with
``torch.load(weights_only=True)`` when torch is installed, else with a restricted unpickler
that only rebuilds tensors; ``.safetensors`` with the ``safetensors`` package (numpy API);
``.npz`` with ``numpy.load(allow_pickle=False)``. :func:`read_checkpoint` unwraps a
checkpoint dict (weights under ``"model"``, ``"state_dict"`` or ``"state_dict_ema"``), keeps
what else the checkpoint says (``idx_to_class``, ``class_names``), drops BatchNorm step
counters and DataParallel's ``module.`` prefix; :func:`read_state_dict` returns the weights.
"""
import collections
import os
import pickle
import zipfile

import numpy as np

DEFAULT_MAX_BYTES = 4 * 2 ** 30  # refuse files whose (uncompressed) content exceeds 4 GiB

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
# official ML-Decoder: "model"; timm: "state_dict" (and "state_dict_ema" beside it)
WRAPPER_KEYS = ("model", "state_dict", "state_dict_ema")
EXTENSIONS = (".pth", ".pt", ".bin", ".ckpt", ".tar", ".safetensors", ".npz")


def _error(path, why):
    return ValueError(f"cannot read checkpoint {path!r}: {why}")


def check_size(path, size, max_bytes):
    """Refuses a file whose content (``size`` bytes) exceeds ``max_bytes``."""
    if size > max_bytes:
        raise _error(path, f"its content is {size} bytes, more than max_bytes={max_bytes}")


class _Storage:
    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel = dtype, key, numel


class _Tensor:
    """A tensor rebuilt from (storage, offset, size, stride); materialised after unpickling."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *unused):
    return data


class _WeightsUnpickler(pickle.Unpickler):
    # Hand-written because torch (a multi-GB dependency) is the only library that reads .pth;
    # only these globals resolve, so unpickling cannot run code.
    _GLOBALS = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        try:
            return self._GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed (only tensors, parameters and "
                f"OrderedDict are read without torch)") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and pid[1] in _STORAGE_DTYPES):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        return _Storage(pid[1], str(pid[2]), int(pid[4]))


def _materialise(tensor, archive, prefix, big_endian, cache):
    st = tensor.storage
    if st.key not in cache:
        dtype = _STORAGE_DTYPES[st.dtype]
        raw_dtype = np.dtype(np.uint16 if dtype == "bfloat16" else dtype)
        raw = archive.read(f"{prefix}data/{st.key}")
        if len(raw) < st.numel * raw_dtype.itemsize:
            raise ValueError(f"storage {st.key} holds {len(raw)} bytes, fewer than its "
                             f"{st.numel} elements")
        arr = np.frombuffer(raw, dtype=raw_dtype.newbyteorder(">" if big_endian else "<"),
                            count=st.numel).astype(raw_dtype)
        if dtype == "bfloat16":  # bfloat16 is the top half of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        cache[st.key] = arr
    flat = cache[st.key]
    if any(s < 0 for s in tensor.stride) or any(s < 0 for s in tensor.size):
        raise ValueError("negative size or stride")
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride) if n)
    if 0 in tensor.size:
        return np.zeros(tensor.size, flat.dtype)
    if tensor.offset < 0 or last >= flat.size:
        raise ValueError(f"tensor view {tensor.size} / {tensor.stride} at offset "
                         f"{tensor.offset} runs past its storage of {flat.size} elements")
    view = np.lib.stride_tricks.as_strided(
        flat[tensor.offset:], shape=tensor.size,
        strides=[s * flat.itemsize for s in tensor.stride], writeable=False)
    return np.array(view)


def _read_pth_without_torch(path, max_bytes):
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise _error(path, "not a zip archive; only PyTorch's zip format (torch >= 1.6) is "
                           "read without torch (install torch to read the legacy format)") \
            from None
    with archive:
        names = archive.namelist()
        check_size(path, sum(i.file_size for i in archive.infolist()), max_bytes)
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise _error(path, "no unique <archive>/data.pkl in the zip")
        prefix = pkl[0][: -len("data.pkl")]
        big_endian = False
        if f"{prefix}byteorder" in names:
            big_endian = archive.read(f"{prefix}byteorder").strip() == b"big"
        with archive.open(pkl[0]) as f:
            try:
                obj = _WeightsUnpickler(f).load()
            except Exception as e:  # a malformed pickle, whatever the opcode that broke
                raise _error(path, f"{type(e).__name__}: {e}") from None
        cache, done, active = {}, {}, set()
        budget = {"bytes": 0}

        def convert(x):
            # each object once (a pickle can share one dict or tensor many times: converting
            # every path would cost exponential time) and no cycles
            key = id(x)
            if key in done:
                return done[key]
            if isinstance(x, _Tensor):
                dtype = _STORAGE_DTYPES.get(getattr(x.storage, "dtype", None), np.float32)
                itemsize = 4 if dtype == "bfloat16" else np.dtype(dtype).itemsize
                budget["bytes"] += int(np.prod(x.size, dtype=np.int64)) * itemsize
                if budget["bytes"] > max_bytes:  # strided views can claim more than the file
                    raise ValueError(f"its tensors hold more than max_bytes={max_bytes} bytes")
                done[key] = _materialise(x, archive, prefix, big_endian, cache)
            elif isinstance(x, dict):
                if key in active:
                    raise ValueError("a dict contains itself")
                active.add(key)
                done[key] = {k: convert(v) for k, v in x.items()}
                active.discard(key)
            else:
                return x
            return done[key]

        try:
            return convert(obj)
        except Exception as e:  # bad views, missing storages, malformed rebuild arguments
            raise _error(path, f"{type(e).__name__}: {e}") from None


def _read_pth_with_torch(path):
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)

    def convert(x):
        if isinstance(x, torch.Tensor):
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
        try:
            from safetensors.numpy import load_file  # the format's own reader
        except ImportError:
            raise ValueError(f"checkpoint: reading {path!r} needs the safetensors package "
                             "(pip install keras-mld[convert])") from None
        return load_file(path)
    if lower.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            check_size(path, sum(i.file_size for i in z.zip.infolist()), max_bytes)
            return {k: z[k] for k in z.files}
    if not lower.endswith(EXTENSIONS):
        raise ValueError(f"checkpoint: path must end in {', '.join(EXTENSIONS[:-2])}, "
                         f".safetensors or .npz, got {path!r}")
    return read_pth(path, use_torch, max_bytes)


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
        raise _error(where, f"expected a state dict (name -> tensor), got {type(raw).__name__}")
    meta = {}
    if "idx_to_class" in raw:
        meta["idx_to_class"] = raw["idx_to_class"]
    for key in WRAPPER_KEYS:
        if isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    state = {}
    for k, v in raw.items():
        k = str(k)
        v = _to_numpy(v)
        if k == "class_names":
            meta["class_names"] = [str(c) for c in np.asarray(v).ravel()]
            continue
        if not isinstance(v, np.ndarray) or k.endswith("num_batches_tracked"):
            continue  # metadata / BN step counters: nothing a Keras weight holds
        state[k[len("module."):] if k.startswith("module.") else k] = v
    if not state:
        raise _error(where, "no tensors found (expected a state dict, or a dict with 'model' / "
                            "'state_dict' holding one)")
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
    return _read_pth_with_torch(path) if use_torch else _read_pth_without_torch(path, max_bytes)


def strip_prefix(state_dict, prefix="module."):
    """``state_dict`` with ``prefix`` removed from the names that start with it (DDP's
    ``module.``)."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}
