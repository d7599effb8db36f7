"""Recipes: the papers' hyper-parameters per dataset, kept as data in ``keras_mld/zoo/*.yaml``.

A recipe has three sections: ``model`` (backbone, head, head_kwargs, input_size,
weights), ``data`` (batch_size, augment, ...) and ``train`` (the keys of
:data:`keras_mld.training.DEFAULT_RECIPE`). :func:`load_recipe` takes a path or the
name of a recipe shipped inside the package (package data read with
:mod:`importlib.resources`, so it works from an installed wheel).

Examples:
    >>> from keras_mld.recipes import list_recipes, load_recipe
    >>> "mldecoder_coco" in list_recipes()
    True
    >>> load_recipe("mldecoder_coco")["model"]["head"]
    'mldecoder'
"""
import os
from importlib import resources

import yaml

SECTIONS = ("model", "data", "train")


def _zoo():
    return resources.files("keras_mld").joinpath("zoo")


def list_recipes():
    """Names of the recipes shipped in the package (``keras_mld/zoo/*.yaml``)."""
    zoo = _zoo()
    if not zoo.is_dir():
        return []
    return sorted(f.name[:-5] for f in zoo.iterdir() if f.name.endswith(".yaml"))


def load_recipe(name_or_path):
    """Reads a recipe YAML file (a path, or a name from :func:`list_recipes`)."""
    path = os.fspath(name_or_path)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    else:
        if path not in list_recipes():  # a name, never a path into the package
            raise ValueError(f"recipe: no such file {path!r} and no packaged recipe of that "
                             f"name; known recipes: {list_recipes()}")
        resource = _zoo().joinpath(f"{path}.yaml")
        text = resource.read_text(encoding="utf-8")
        path = str(resource)
    recipe = yaml.safe_load(text)
    if not isinstance(recipe, dict):
        raise ValueError(f"recipe: {path} must hold a mapping with sections {SECTIONS}")
    unknown = set(recipe) - set(SECTIONS) - {"name", "source"}
    if unknown:
        raise ValueError(f"recipe: {path} has unknown sections {sorted(unknown)}; "
                         f"expected {SECTIONS} (plus name, source)")
    for section in SECTIONS:
        recipe.setdefault(section, {})
        if not isinstance(recipe[section], dict):
            raise ValueError(f"recipe: section {section!r} of {path} must be a mapping")
    recipe.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    recipe["path"] = path
    return recipe
