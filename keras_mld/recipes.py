"""Recipes: the papers' hyper-parameters per dataset, kept as data in ``zoo/*.yaml``.

A recipe has three sections: ``model`` (backbone, head, head_kwargs, input_size,
weights), ``data`` (batch_size, augment, ...) and ``train`` (the keys of
:data:`keras_mld.training.DEFAULT_RECIPE`). :func:`load_recipe` takes a path or the
name of a file in the repository's ``zoo/`` folder.
"""
import os

import yaml

ZOO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "zoo")
SECTIONS = ("model", "data", "train")


def list_recipes():
    """Names of the recipes in ``zoo/``."""
    if not os.path.isdir(ZOO_DIR):
        return []
    return sorted(f[:-5] for f in os.listdir(ZOO_DIR) if f.endswith(".yaml"))


def load_recipe(name_or_path):
    """Reads a recipe YAML file (a path, or a name from :func:`list_recipes`)."""
    path = os.fspath(name_or_path)
    if not os.path.isfile(path):
        candidate = os.path.join(ZOO_DIR, f"{path}.yaml")
        if not os.path.isfile(candidate):
            raise ValueError(f"recipe: no such file {path!r} and no recipe of that name in "
                             f"{ZOO_DIR}; known recipes: {list_recipes()}")
        path = candidate
    with open(path, encoding="utf-8") as f:
        recipe = yaml.safe_load(f)
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
