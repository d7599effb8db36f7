"""Writing files and folders atomically: the one writer of every artefact keras-mld makes
(SavedModel versions, ONNX / OpenVINO exports, presets, converted models, checkpoints of a
training run, reports, the embedded digits data).

:func:`atomic_path` hands out a hidden temporary path beside the destination; when the
``with`` block ends cleanly it is renamed onto the destination, on an error it is removed. A
reader sees the old complete file or folder or the new complete one, never a half-written
one, and nothing half-written is left behind. Without ``overwrite`` the rename itself
refuses an existing destination (a hard link for files, ``rename`` onto a non-empty folder
for folders), so two writers cannot both succeed and nothing is checked-then-replaced.

Stdlib only (no Keras, no TensorFlow).

Examples:
    >>> import json, os, tempfile
    >>> from keras_mld.atomic import atomic_path, write_json
    >>> folder = tempfile.mkdtemp()
    >>> with atomic_path(os.path.join(folder, "model"), directory=True) as tmp:
    ...     write_json(os.path.join(tmp, "config.json"), {"layers": 3})
    >>> sorted(os.listdir(folder))
    ['model']
    >>> with atomic_path(os.path.join(folder, "model"), directory=True) as tmp:
    ...     pass
    Traceback (most recent call last):
    ...
    FileExistsError: write: ... exists; pass overwrite=True to replace it
"""
import contextlib
import errno
import json
import os
import shutil
import tempfile
import uuid


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def _exists_error(path, caller):
    return FileExistsError(f"{caller}: {path!r} exists; pass overwrite=True to replace it")


def _publish_file(tmp, path, overwrite, caller):
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if path exists: the atomic "create, never replace"
    except FileExistsError:
        raise _exists_error(path, caller) from None
    except OSError as err:  # a file system without hard links
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # claim the name, then fill it
        os.close(fd)
        os.replace(tmp, path)
        return
    os.remove(tmp)


def _publish_dir(tmp, path, overwrite, caller):
    if not overwrite:
        if os.path.lexists(path) and not os.path.isdir(path):
            raise _exists_error(path, caller)
        try:
            os.rename(tmp, path)  # refused by the OS when path is a non-empty folder
        except OSError as err:
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise _exists_error(path, caller) from None
            raise
        return
    parent, name = os.path.split(path)
    aside = os.path.join(parent, f".old-{uuid.uuid4().hex[:8]}-{name}")
    had_old = os.path.lexists(path)
    if had_old:
        os.rename(path, aside)
    try:
        os.rename(tmp, path)
    except BaseException:
        if had_old:
            os.rename(aside, path)
        raise
    if had_old:
        _remove(aside)


@contextlib.contextmanager
def atomic_path(path, overwrite=False, directory=False, caller="write"):
    """Yields a hidden temporary path beside ``path`` to write; renames it onto ``path`` when
    the block ends without error (removes it otherwise).

    Args:
        path: the destination file or folder; its parent folder is created.
        overwrite: replace an existing ``path`` (a folder is renamed aside first and removed
            once the new one is in place). Without it an existing ``path`` raises
            ``FileExistsError`` naming ``caller``, at the end, from the rename itself.
        directory: the temporary path is a new empty folder (permissions as ``mkdir``
            gives under the umask, so that another user, e.g. a serving process, can read
            it), else a file name that does not exist yet (it keeps ``path``'s suffix, so
            writers that check the extension, e.g. ``model.save``, accept it).
        caller: named in the errors.
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    if directory:
        tmp = tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=parent)
        os.chmod(tmp, 0o777 & ~_umask())
    else:
        tmp = os.path.join(parent, f".tmp-{uuid.uuid4().hex[:12]}-{name}")
    try:
        yield tmp
        if not directory:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            _publish_file(tmp, path, overwrite, caller)
        else:
            _publish_dir(tmp, path, overwrite, caller)
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(path, data, overwrite=True, caller="write"):
    """Writes ``data`` (bytes) to ``path`` atomically."""
    with atomic_path(path, overwrite=overwrite, caller=caller) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(path, text, overwrite=True, caller="write"):
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"), overwrite=overwrite, caller=caller)


def write_json(path, obj, overwrite=True, caller="write", **dump_kwargs):
    """Writes ``obj`` as JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, **dump_kwargs), overwrite=overwrite, caller=caller)


def save_model(model, path, overwrite=True, caller="save"):
    """``model.save(path)`` (``.keras``) or ``model.save_weights(path)`` (``.weights.h5``)
    written aside and renamed into place: ``path`` is never half-written."""
    path = os.fspath(path)
    if path.endswith(".weights.h5"):
        save = model.save_weights
    elif path.endswith(".keras"):
        save = model.save
    else:
        raise ValueError(f"{caller}: path must end in .keras or .weights.h5, got {path!r}")
    with atomic_path(path, overwrite=overwrite, caller=caller) as tmp:
        save(tmp)
    return os.path.abspath(path)
