"""``.npz`` and ``.safetensors`` weight files into ``{name: numpy.ndarray}``, with every
declared size checked against the bytes the file holds before anything is allocated.

Errors are ``ValueError("cannot read checkpoint '<file>': <what is wrong>")``
(:func:`checkpoint_error`), whatever the damage.
"""
import os
import struct
import zipfile

import ml_dtypes
import numpy as np

from keras_mld.untrusted import parse_json

# safetensors dtype codes -> numpy dtypes; bfloat16 and float8 come back as float32
SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
_AS_FLOAT32 = ("BF16", "F8_E4M3", "F8_E5M2")
# safetensors JSON header: the format allows 100 MB; keras-mld accepts at most
# HEADER_FLOOR_BYTES + HEADER_BYTES_PER_TENSOR per tensor entry in it (4 MB per 1,000
# tensors; a real entry is ~100-200 bytes), and never more than MAX_HEADER_BYTES
MAX_HEADER_BYTES = 16 * 2 ** 20
HEADER_FLOOR_BYTES = 64 * 2 ** 10
HEADER_BYTES_PER_TENSOR = 4 * 2 ** 10
# a zip archive may not inflate to more than this multiple of its size on disk (floor below):
# weights compress ~1.1x, a zip bomb ~1000x
MAX_COMPRESSION_RATIO = 100
RATIO_FLOOR_BYTES = 16 * 2 ** 20


def checkpoint_error(path, why):
    """The one refusal of the checkpoint readers: a ``ValueError`` naming the file."""
    return ValueError(f"cannot read checkpoint {path!r}: {why}")


def check_size(path, size, max_bytes):
    """Refuses a file whose content (``size`` bytes) exceeds ``max_bytes``."""
    if size > max_bytes:
        raise checkpoint_error(
            path, f"its content is {size} bytes, more than max_bytes={max_bytes}")


def check_archive(path, archive, max_bytes):
    """Refuses a zip ``archive`` whose members declare more than ``max_bytes`` in all, or more
    than ``MAX_COMPRESSION_RATIO`` x the file's size (past a 16 MiB floor): a zip bomb.
    Returns the declared uncompressed size."""
    content = sum(i.file_size for i in archive.infolist())
    check_size(path, content, max_bytes)
    on_disk = os.path.getsize(path)
    if content > max(MAX_COMPRESSION_RATIO * on_disk, RATIO_FLOOR_BYTES):
        raise checkpoint_error(path, f"its {on_disk} bytes inflate to {content} (more than "
                                     f"{MAX_COMPRESSION_RATIO} x: a zip bomb?)")
    return content


def _npy_header(path, member, f):
    """``(shape, dtype, fortran_order)`` of an ``.npy`` member, its size checked."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"npy format version {version} is not read")
    except ValueError as e:
        raise checkpoint_error(path, f"member {member!r}: {e}") from None
    if dtype.hasobject:
        raise checkpoint_error(path, f"member {member!r} holds Python objects (not read: "
                                     "loading them would run pickle)")
    return shape, dtype, fortran


def read_npz(path, max_bytes):
    """``{name: array}`` of an ``.npz`` (``numpy.savez``) file: each member's declared shape
    and dtype is checked against the bytes it holds before its array is allocated."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise checkpoint_error(path, "not an .npz (zip) archive") from None
    out = {}
    with archive:
        infos = archive.infolist()
        check_archive(path, archive, max_bytes)
        for info in infos:
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as f:
                shape, dtype, fortran = _npy_header(path, info.filename, f)
                declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if declared > info.file_size - f.tell():
                    raise checkpoint_error(
                        path, f"member {info.filename!r} declares {shape} {dtype} "
                              f"({declared} bytes) but holds {info.file_size - f.tell()}")
            with archive.open(info) as f:
                out[info.filename[:-len(".npy")]] = np.lib.format.read_array(
                    f, allow_pickle=False)
    return out


def read_safetensors(path, max_bytes):
    """``{name: array}`` of a ``.safetensors`` file (bfloat16 and float8 as float32).

    Hand-parsed (the format is an 8-byte length, a JSON header and one buffer) because the
    ``safetensors`` package's numpy API cannot return bfloat16 / float8 arrays."""
    with open(path, "rb") as f:  # the header is checked before the rest is read
        size = os.fstat(f.fileno()).st_size
        check_size(path, size, max_bytes)
        head = f.read(8)
        if len(head) < 8:
            raise checkpoint_error(path, f"{len(head)} bytes, too short for a safetensors "
                                         "header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise checkpoint_error(path, f"header length {n} runs past the file ({size} "
                                         "bytes)")
        if n > MAX_HEADER_BYTES:
            raise checkpoint_error(path, f"header length {n} is over {MAX_HEADER_BYTES} "
                                         "bytes")
        raw = f.read(n)
        # an entry per tensor has a "data_offsets" key: counted before the JSON is parsed
        entries = raw.count(b'"data_offsets"')
        if n > HEADER_FLOOR_BYTES + HEADER_BYTES_PER_TENSOR * entries:
            raise checkpoint_error(
                path, f"header of {n} bytes for {entries} tensor entries: more than "
                      f"{HEADER_FLOOR_BYTES} + {HEADER_BYTES_PER_TENSOR} bytes per tensor")
        buffer = f.read(max_bytes + 1 - 8 - n)
    check_size(path, 8 + n + len(buffer), max_bytes)
    try:  # bounded nesting, every parser error a ValueError
        header = parse_json(raw, "header")
    except ValueError as e:
        raise checkpoint_error(path, f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise checkpoint_error(path, "header is not a JSON object")
    meta = header.get("__metadata__", {})
    if not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise checkpoint_error(path, "__metadata__ must map strings to strings")
    buffer = memoryview(buffer)
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not (isinstance(entry, dict) and entry.get("dtype") in SAFETENSORS_DTYPES
                and isinstance(entry.get("shape"), list)
                and all(type(s) is int and s >= 0 for s in entry["shape"])
                and isinstance(entry.get("data_offsets"), list)
                and len(entry["data_offsets"]) == 2
                and all(type(o) is int for o in entry["data_offsets"])):
            raise checkpoint_error(
                path, f"tensor {name!r}: expected {{'dtype': one of "
                      f"{sorted(SAFETENSORS_DTYPES)}, 'shape': [int >= 0, ...], "
                      f"'data_offsets': [begin, end]}}, got {str(entry)[:200]}")
        dtype = np.dtype(SAFETENSORS_DTYPES[entry["dtype"]])
        begin, end = entry["data_offsets"]
        nbytes = int(np.prod(entry["shape"], dtype=object)) * dtype.itemsize
        if not 0 <= begin <= end <= len(buffer) or end - begin != nbytes:
            raise checkpoint_error(
                path, f"tensor {name!r}: offsets [{begin}, {end}] do not hold its "
                      f"{entry['shape']} {entry['dtype']} ({nbytes} bytes) inside the "
                      f"{len(buffer)}-byte buffer")
        arr = np.frombuffer(buffer[begin:end], dtype=dtype.newbyteorder("<")).reshape(
            entry["shape"])
        out[name] = arr.astype(np.float32 if entry["dtype"] in _AS_FLOAT32 else dtype)
    return out
