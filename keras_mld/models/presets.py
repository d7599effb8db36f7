"""Presets of :class:`keras_mld.ImageClassifier`, in keras-hub's manner.

A preset is either

- a **name** from :func:`list_presets`, registered by an architecture folder of
  :mod:`keras_mld.models` (:func:`keras_mld.registry.register_preset`); today the built-in
  recipes (``keras_mld.recipes``) with one ``model.head``: the architecture and
  hyper-parameters of a paper's recipe, with the backbone's ImageNet weights when the recipe
  asks for them (downloaded by Keras; pass ``weights=None`` offline). Keyword arguments go to
  :func:`keras_mld.build` and override the recipe (``class_names=...`` for a dataset other
  than MS-COCO); or
- ``"hf://owner/repo"``: such a folder published on the Hugging Face Hub (by
  :func:`upload_preset`), downloaded through ``huggingface_hub`` (its cache, ``HF_ENDPOINT``,
  ``HF_HUB_OFFLINE``); ``"hf://timm/<model>.<tag>"`` for timm's TResNets is a registered
  name (:mod:`keras_mld.models.tresnet.presets`); or
- a **folder** written by :meth:`ImageClassifier.save_to_preset`:

  - ``config.json``: the model's Keras config (class names, thresholds and task included),
    rebuilt with ``safe_mode`` deserialisation (no code is run from the file);
  - ``model.weights.h5``: its weights;
  - ``metadata.json``: ``format``, ``keras_mld_version``, ``keras_version``,
    ``class_names``, ``thresholds``, ``task``, ``image_size``, the ``recipe`` that trained
    it and its ``validation`` figures.

Saving is atomic: the files are written into a hidden temporary folder beside the target,
which is renamed into place when complete.
"""
import json
import os

import keras

from keras_mld.atomic import atomic_path
from keras_mld.checkpoints.hub import HF_SCHEME, hub_download, hub_upload_folder, parse_hf_uri
from keras_mld.registry import get_preset, list_presets as _registered_presets
from keras_mld.untrusted import read_json
from keras_mld.version import __version__

PRESET_FORMAT = "keras_mld.preset/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
PRESET_FILES = (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE)


def list_presets():
    """Sorted names :meth:`ImageClassifier.from_preset` accepts (besides preset folders);
    each architecture folder of :mod:`keras_mld.models` registers its own."""
    return _registered_presets()


def _unknown(preset, why):
    return ValueError(f"preset: {why}; expected a preset folder (holding {list(PRESET_FILES)}, "
                      f"written by ImageClassifier.save_to_preset) or one of the known names "
                      f"{list_presets()}; got {preset!r}")


def load_preset(cls, preset, **kwargs):
    """:meth:`ImageClassifier.from_preset` (see the module docstring); ``cls`` is the class
    the loaded model must be an instance of."""
    if isinstance(preset, (str, os.PathLike)) and os.path.isdir(preset):
        if kwargs:
            raise ValueError(f"from_preset: a preset folder takes no build arguments, got "
                             f"{sorted(kwargs)}")
        return _load_folder(cls, os.fspath(preset))
    if not isinstance(preset, str):
        raise _unknown(preset, "not a name or a folder")
    spec = get_preset(preset)
    if spec is None and preset.startswith(HF_SCHEME):
        if kwargs:
            raise ValueError(f"from_preset: a preset on the Hub takes no build arguments, got "
                             f"{sorted(kwargs)}")
        return _load_folder(cls, _download_preset(preset))
    if spec is None:
        if os.sep in preset or os.path.exists(preset):
            raise _unknown(preset, f"no preset folder at {preset!r}")
        raise _unknown(preset, f"unknown preset name {preset!r}")
    return spec.load(**kwargs)


def _download_preset(uri):
    """The local folder (in the Hub cache) of the keras-mld preset at ``hf://owner/repo``."""
    repo_id = parse_hf_uri(uri)
    try:
        paths = [hub_download(repo_id, name) for name in PRESET_FILES]
    except ValueError as err:
        if repo_id.startswith("timm/"):
            raise ValueError(f"{err}. From timm, keras-mld reads the TResNets only: "
                             f"{[n for n in list_presets() if n.startswith('hf://timm/')]}") \
                from None
        raise ValueError(f"{err}. A keras-mld preset on the Hub holds {list(PRESET_FILES)} "
                         "(published with keras_mld.upload_preset)") from None
    folders = {os.path.dirname(p) for p in paths}
    if len(folders) != 1:
        raise ValueError(f"{uri}: the preset files came from different revisions {folders}; "
                         "try again")
    return folders.pop()


def _read_json(path):
    if not os.path.isfile(path):
        raise _unknown(os.path.dirname(path), f"{path} is missing")
    try:  # bounded nesting, no NaN / Infinity, every parser error a ValueError
        return read_json(path, "preset", finite=False)  # a Keras config may hold inf
    except ValueError as err:
        raise _unknown(os.path.dirname(path),
                       f"{path} is not a readable JSON file ({err})") from None


def _load_folder(cls, folder):
    config_path, weights_path, meta_path = (os.path.join(folder, f) for f in PRESET_FILES)
    meta = _read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != PRESET_FORMAT:
        raise _unknown(folder, f"{meta_path} does not hold a {PRESET_FORMAT!r} mapping")
    config = _read_json(config_path)
    if not isinstance(config, dict) or config.get("class_name") != cls.__name__:
        raise _unknown(folder, f"{config_path} does not hold an {cls.__name__} config")
    try:
        model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    except Exception as err:  # Keras raises TypeError/ValueError/KeyError on a bad config
        raise _unknown(folder, f"{config_path} could not be deserialised ({err})") from None
    if not isinstance(model, cls):
        raise _unknown(folder, f"{config_path} does not hold an {cls.__name__} config")
    if not os.path.isfile(weights_path):
        raise _unknown(folder, f"{weights_path} is missing")
    try:
        model.load_weights(weights_path)
    except Exception as err:  # h5py OSError, Keras ValueError on a mismatch
        raise _unknown(folder, f"{weights_path} could not be loaded into the model of "
                       f"{config_path} ({err})") from None
    return model


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist")
                                 else str(o)))


def save_preset(model, preset_dir, recipe=None, validation=None, overwrite=False):
    """:meth:`ImageClassifier.save_to_preset`; returns the folder's path."""
    if recipe is not None and not isinstance(recipe, dict):
        raise ValueError(f"recipe: expected None or a recipe mapping, got {type(recipe).__name__}")
    if validation is not None and not isinstance(validation, dict):
        raise ValueError("validation: expected None or a mapping of figures, got "
                         f"{type(validation).__name__}")
    final = os.path.abspath(os.fspath(preset_dir))
    if os.path.exists(final) and not overwrite:  # fail before the work; the rename refuses too
        raise ValueError(f"preset_dir: {final} exists; pass overwrite=True to replace it")
    with atomic_path(final, overwrite=overwrite, directory=True, caller="save_to_preset") as tmp:
        with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(_jsonable(keras.saving.serialize_keras_object(model)), f)
        model.save_weights(os.path.join(tmp, WEIGHTS_FILE))
        recipe = {k: v for k, v in (recipe or {}).items() if k != "path"} or None
        meta = {"format": PRESET_FORMAT, "keras_mld_version": __version__,
                "keras_version": keras.__version__, "class_names": model.class_names,
                "thresholds": model.thresholds, "task": model.task,
                "image_size": list(model.image_size) if model.image_size else None,
                "recipe": recipe, "validation": validation}
        with open(os.path.join(tmp, METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(_jsonable(meta), f, indent=1, ensure_ascii=False)
    return final


def upload_preset(preset, uri, private=None, commit_message=None):
    """Publishes a preset folder (written by :meth:`ImageClassifier.save_to_preset`) to the
    Hugging Face Hub as ``hf://owner/repo``, as ``keras_hub.upload_preset`` does; anyone can
    then load it with ``ImageClassifier.from_preset("hf://owner/repo")``.

    The folder is checked first (exactly the preset's files, its metadata's format); the
    repository is
    created if needed (``private`` as given) and the files are uploaded in one commit
    (log in with ``hf auth login`` or ``HF_TOKEN``). Returns the commit's URL.
    """
    repo_id = parse_hf_uri(uri)
    if not isinstance(preset, (str, os.PathLike)) or not os.path.isdir(preset):
        raise ValueError(f"upload_preset: preset must be a preset folder, got {preset!r}")
    folder = os.fspath(preset)
    meta = _read_json(os.path.join(folder, METADATA_FILE))
    if not isinstance(meta, dict) or meta.get("format") != PRESET_FORMAT:
        raise _unknown(folder, f"{METADATA_FILE} does not hold a {PRESET_FORMAT!r} mapping")
    for name in PRESET_FILES:
        if not os.path.isfile(os.path.join(folder, name)):
            raise _unknown(folder, f"{os.path.join(folder, name)} is missing")
    extra = sorted(set(os.listdir(folder)) - set(PRESET_FILES))
    if extra:
        raise ValueError(f"upload_preset: {folder} holds files besides the preset's "
                         f"{list(PRESET_FILES)}: {extra}; upload a folder written by "
                         "save_to_preset")
    return hub_upload_folder(folder, repo_id, private=private, commit_message=commit_message)
