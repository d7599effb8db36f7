"""The fuzzed surfaces: each takes a file's bytes, writes them where the loader expects them
and loads them. The property every surface holds: the loader returns, or raises a
``ValueError`` naming the file; never another exception type, never a hang.

Shared by the Hypothesis tests (``tests/fuzz/``), the corpus test and the maintainers' long
campaign (``scripts/fuzz_campaign.py``, atheris or Hypothesis). Seeds and crafted files live
in ``tests/fixtures/fuzz/<surface>/`` (``seed_*`` load, ``bad_*`` are refused), written by
``scripts/make_fuzz_corpus.py``.
"""
import os
import pathlib

from keras_mld.checkpoints.reader import read_state_dict
from keras_mld.data.coco import load_coco
from keras_mld.data.csv import load_csv
from keras_mld.recipes import load_recipe
from keras_mld.untrusted import read_json

CORPUS = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "fuzz"


def _checkpoint(ext):
    def load(path):
        return read_state_dict(path, use_torch=False, max_bytes=64 * 2 ** 20)
    return ext, load


_MODELS = []


def _image(path):
    """``predict_labels`` on an image file (any format: the extension is not trusted)."""
    if not _MODELS:
        from keras_mld.models.builder import build

        _MODELS.append(build("small_convnet", head="gap", class_names=["a", "b"],
                             input_shape=(16, 16, 3)))
    return _MODELS[0].predict_labels([path])


def _gif(path):
    """The two GIF size walks (in-graph, as served models run it, and Python, as
    ``predict_labels`` runs it) agree; a GIF over ``max_image_pixels`` is refused."""
    import tensorflow as tf

    from keras_mld.data.image import DEFAULT_MAX_IMAGE_PIXELS, gif_shape, image_shape_from_header

    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"GIF8":
        raise ValueError(f"{path}: not a GIF")
    graph = tuple(int(v) for v in image_shape_from_header(tf.constant(data)).numpy())
    python = gif_shape(data)
    if graph != python:
        raise AssertionError(f"{path}: the GIF walks differ: in-graph {graph}, Python {python}")
    if python[0] * python[1] > DEFAULT_MAX_IMAGE_PIXELS:
        raise ValueError(f"{path}: {python[0]} x {python[1]} pixels, over max_image_pixels")


def _state_json(path):
    """A callback's resume state, as ``fit`` reads it back."""
    from keras_mld.training.callbacks import EMAEarlyStopping

    EMAEarlyStopping(patience=2, state_path=path).on_train_begin()


def _coco(path):
    return load_coco(path, max_classes=1000)


def _csv(path):
    return load_csv(path, max_classes=1000)


SURFACES = {
    "pth": _checkpoint(".pth"),
    "npz": _checkpoint(".npz"),
    "safetensors": _checkpoint(".safetensors"),
    "coco": (".json", _coco),
    "csv": (".csv", _csv),
    "recipe": (".yaml", lambda path: load_recipe(path)),
    "preset_json": (".json", lambda path: read_json(path, "preset", finite=False)),
    "image": (".img", _image),
    "gif": (".gif", _gif),
    "state_json": (".json", _state_json),
}


class Escaped(AssertionError):
    """A loader broke the contract: another exception type, or a ValueError not naming the
    file."""


def run_surface(surface, data, folder):
    """Writes ``data`` into ``folder`` and loads it; returns ``"loaded"`` or ``"refused"``;
    raises :class:`Escaped` when the contract is broken."""
    ext, load = SURFACES[surface]
    path = os.path.join(folder, f"input{ext}")
    with open(path, "wb") as f:
        f.write(data)
    try:
        load(path)
    except ValueError as e:
        if path not in str(e):
            raise Escaped(f"{surface}: ValueError without the file name: {e}") from e
        return "refused"
    except Exception as e:
        raise Escaped(f"{surface}: {type(e).__name__} escaped the contract: {e}"[:2000]) from e
    return "loaded"


def corpus(surface):
    """``[(name, bytes)]`` of the committed files of ``surface``, sorted by name."""
    folder = CORPUS / surface
    return sorted((p.name, p.read_bytes()) for p in folder.iterdir() if p.is_file())


def seeds(surface):
    return [data for name, data in corpus(surface) if name.startswith("seed_")]
