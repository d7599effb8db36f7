"""Publishing a finished directory atomically (no Keras, no TensorFlow).

Every writer of a multi-file artefact (SavedModel versions, ONNX / OpenVINO exports,
presets) fills a hidden temporary directory beside its destination, then calls
:func:`move_into_place`: a reader sees either the old complete directory or the new
complete one, never a half-written one.
"""
import os
import shutil
import uuid


def move_into_place(tmp_dir, final_dir, overwrite, caller):
    """Renames the finished ``tmp_dir`` to ``final_dir`` (same parent folder).

    An existing ``final_dir`` is refused (``FileExistsError`` naming ``caller``) unless
    ``overwrite``; then it is renamed aside first and removed only once the new directory is
    in place (on a failure the old one is put back).
    """
    if not os.path.exists(final_dir):
        os.rename(tmp_dir, final_dir)
        return
    if not overwrite:
        raise FileExistsError(f"{caller}: {final_dir!r} appeared while it was being written")
    parent, name = os.path.split(final_dir)
    aside = os.path.join(parent, f".old-{name}-{uuid.uuid4().hex[:8]}")
    os.rename(final_dir, aside)
    try:
        os.rename(tmp_dir, final_dir)
    except BaseException:
        os.rename(aside, final_dir)
        raise
    shutil.rmtree(aside, ignore_errors=True)
