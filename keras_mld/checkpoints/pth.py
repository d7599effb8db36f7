"""PyTorch's zip checkpoint format read without torch: a restricted unpickler that only
rebuilds tensors (no code from the file runs), each tensor materialised from its storage.

Cost is bounded by the file: a storage keeps one dtype, and strided views (stride 0, or
overlapping) may not materialise more than ``VIEW_AMPLIFICATION`` times the bytes the archive
holds. Every refusal is a ``ValueError`` naming the file.
"""
import collections
import math
import pickle
import zipfile

import numpy as np

from keras_mld.checkpoints.formats import check_archive, checkpoint_error

STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
VIEW_AMPLIFICATION = 4  # materialised bytes <= 4 x the archive's (uncompressed) content


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

    def __init__(self, file):
        super().__init__(file)
        self.storages = {}

    def find_class(self, module, name):
        if module == "torch" and name in STORAGE_DTYPES:
            return name
        try:
            return self._GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed (only tensors, parameters and "
                f"OrderedDict are read without torch)") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and pid[1] in STORAGE_DTYPES and isinstance(pid[4], int) and pid[4] >= 0):
            raise pickle.UnpicklingError(f"unsupported persistent id {str(pid)[:200]}")
        key = str(pid[2])
        storage = _Storage(pid[1], key, pid[4])
        seen = self.storages.setdefault(key, storage)
        if (seen.dtype, seen.numel) != (storage.dtype, storage.numel):
            raise pickle.UnpicklingError(
                f"storage {key!r} is declared as {seen.dtype} of {seen.numel} elements and as "
                f"{storage.dtype} of {storage.numel} (a storage keeps one dtype)")
        return seen


def _materialise(tensor, archive, prefix, big_endian, cache):
    st = tensor.storage
    if st.key not in cache:
        dtype = STORAGE_DTYPES[st.dtype]
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


def read_pth_without_torch(path, max_bytes):
    """The whole object of a PyTorch zip checkpoint, tensors as ``numpy.ndarray``."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise checkpoint_error(
            path, "not a zip archive; only PyTorch's zip format (torch >= 1.6) is read "
                  "without torch (install torch to read the legacy format)") from None
    with archive:
        names = archive.namelist()
        content = check_archive(path, archive, max_bytes)
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise checkpoint_error(path, "no unique <archive>/data.pkl in the zip")
        prefix = pkl[0][: -len("data.pkl")]
        big_endian = False
        if f"{prefix}byteorder" in names:
            big_endian = archive.read(f"{prefix}byteorder").strip() == b"big"
        try:
            with archive.open(pkl[0]) as f:
                obj = _WeightsUnpickler(f).load()
        except Exception as e:  # a malformed pickle or zip member, whatever broke
            raise checkpoint_error(path, f"{type(e).__name__}: {e}") from None
        cache, done, active = {}, {}, set()
        limit = min(max_bytes, VIEW_AMPLIFICATION * content)
        budget = {"bytes": 0}

        def convert(x):
            # each object once (a pickle can share one dict or tensor many times: converting
            # every path would cost exponential time) and no cycles
            key = id(x)
            if key in done:
                return done[key]
            if isinstance(x, _Tensor):
                dtype = STORAGE_DTYPES.get(getattr(x.storage, "dtype", None), np.float32)
                itemsize = 4 if dtype == "bfloat16" else np.dtype(dtype).itemsize
                budget["bytes"] += math.prod(x.size) * itemsize  # Python ints: no overflow
                if budget["bytes"] > limit:  # strided views can claim more than the file
                    raise ValueError(
                        f"its tensors would materialise more than {limit} bytes (max_bytes="
                        f"{max_bytes}, or {VIEW_AMPLIFICATION} x the {content} bytes the file "
                        f"holds: stride-0 or overlapping views)")
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
            raise checkpoint_error(path, f"{type(e).__name__}: {e}") from None


