"""Reading files a user is handed: JSON and YAML with bounded nesting and no non-finite
numbers, and dataset paths kept inside their root. Every refusal is a ``ValueError`` that
names the file (and the row), never the parser's own exception types (``RecursionError``,
``UnicodeDecodeError``, PyYAML's ``YAMLError`` family, ``OverflowError``).

A leaf module: it imports nothing from keras_mld.
"""
import json
import math
import os

import yaml

MAX_DEPTH = 64  # nesting levels: every file keras-mld reads needs fewer than 10
# encoded image bytes of one served request, or of one image in predict_labels: bounds the
# time of the header checks that run before decoding
MAX_REQUEST_BYTES = 32 * 2 ** 20
# a state or metadata file keras-mld writes itself (resume state, recipe, caches): far less
MAX_STATE_BYTES = 64 * 2 ** 20


def check_depth(value, where, max_depth=MAX_DEPTH):
    """Refuses ``value`` (parsed JSON / YAML) nested deeper than ``max_depth`` levels.

    Iterative, and each container is visited once (YAML aliases share one object many
    times: walking every path would take exponential time)."""
    seen, stack = set(), [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list, tuple)) or id(item) in seen:
            continue
        if depth > max_depth:
            raise ValueError(f"{where}: nested more than {max_depth} levels deep")
        seen.add(id(item))
        children = list(item.keys()) + list(item.values()) if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)
    return value


def _no_constant(name):
    raise ValueError(f"{name} is not a number keras-mld accepts")


def parse_json(text, where, max_depth=MAX_DEPTH, finite=True):
    """``json.loads(text)`` (str or bytes) with nesting deeper than ``max_depth`` (and, when
    ``finite``, ``NaN`` / ``Infinity``) refused: a ``ValueError`` naming ``where``."""
    try:
        value = json.loads(text, parse_constant=_no_constant if finite else None)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{where}: not valid JSON ({type(e).__name__}: {e})") from None
    return check_depth(value, where, max_depth)


def read_json(path, what, max_depth=MAX_DEPTH, finite=True, max_bytes=None):
    """The JSON file ``path`` parsed by :func:`parse_json`; ``what`` (the caller) and the
    file are named in every error. A file over ``max_bytes`` (None: no limit) is refused
    before it is parsed."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            text = f.read(-1 if max_bytes is None else max_bytes + 1)
    except OSError as e:
        raise ValueError(f"{what}: cannot read {path!r} ({e.strerror or e})") from None
    if max_bytes is not None and len(text) > max_bytes:
        raise ValueError(f"{what}: {path!r} is over {max_bytes} bytes")
    return parse_json(text, f"{what}: {path!r}", max_depth, finite)


def finite_number(value, where):
    """``value`` as a float when it is a finite JSON number (not a bool), else a
    ``ValueError`` naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}"[:300])
    return float(value)


def parse_yaml(text, where, max_depth=MAX_DEPTH):
    """``yaml.safe_load(text)`` with every PyYAML error, deep nesting and ``RecursionError``
    a ``ValueError`` naming ``where``."""
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        raise ValueError(f"{where}: not valid YAML ({type(e).__name__}: "
                         f"{str(e)[:300]})") from None
    return check_depth(value, where, max_depth)


def inside_root(root, name, where, allow_outside=False):
    """``root / name`` normalised. A ``name`` that lands outside ``root`` (an absolute path
    elsewhere, or ``..`` leaving it; checked on the text, symlinks are not followed) is
    refused, naming ``where`` (e.g. the file and row), unless ``allow_outside=True``."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"{where}: expected a non-empty path string, got {name!r}")
    path = os.path.normpath(os.path.join(root, name))
    if not allow_outside:
        top = os.path.abspath(root)
        if os.path.commonpath([top, os.path.abspath(path)]) != top:
            kind = "absolute path" if os.path.isabs(name) else "path"
            raise ValueError(f"{where}: {kind} {name!r} is outside the dataset folder "
                             f"{root!r} (pass allow_outside_paths=True to accept it)")
    return path
