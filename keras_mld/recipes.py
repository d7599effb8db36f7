"""Recipes: the papers' hyper-parameters per dataset, kept as data in ``keras_mld/zoo/*.yaml``.

A recipe has three sections: ``model`` (backbone, head, head_kwargs, input_size,
weights; or ``heads: {name: head_kwargs}`` for a recipe that trains several heads side by
side), ``data`` (batch_size, augment, ...) and ``train`` (the keys of
:data:`keras_mld.training.DEFAULT_RECIPE`). :func:`load_recipe` takes a path or the
name of a recipe shipped inside the package (package data read with
:mod:`importlib.resources`, so it works from an installed wheel);
:func:`model_arguments` turns its ``model`` section into :func:`keras_mld.build` arguments
(the one place that does).

Examples:
    >>> from keras_mld.recipes import list_recipes, load_recipe
    >>> "mldecoder_coco" in list_recipes()
    True
    >>> load_recipe("mldecoder_coco")["model"]["head"]
    'mldecoder'
"""
import os
from importlib import resources

from keras_mld.untrusted import parse_yaml

SECTIONS = ("model", "data", "train")
# PyYAML parses about 40 KB a second at worst (deep flow nesting); recipes are ~1 KB
MAX_RECIPE_BYTES = 64 * 2 ** 10


def _zoo():
    return resources.files("keras_mld").joinpath("zoo")


def list_recipes():
    """Names of the recipes shipped in the package (``keras_mld/zoo/*.yaml``)."""
    zoo = _zoo()
    if not zoo.is_dir():
        return []
    return sorted(f.name[:-5] for f in zoo.iterdir() if f.name.endswith(".yaml"))


def load_recipe(name_or_path):
    """Reads a recipe YAML file (a path, or a name from :func:`list_recipes`); a file that is
    not a recipe (over 64 KiB, YAML errors, nesting over 64 levels, bad UTF-8, missing
    sections) is refused with a ``ValueError`` naming it."""
    path = os.fspath(name_or_path)
    if os.path.isfile(path):
        if os.path.getsize(path) > MAX_RECIPE_BYTES:
            raise ValueError(f"recipe: {path!r} has {os.path.getsize(path)} bytes, more than a "
                             f"recipe's {MAX_RECIPE_BYTES}")
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"recipe: cannot read {path!r} as UTF-8 text ({e})") from None
    else:
        if path not in list_recipes():  # a name, never a path into the package
            raise ValueError(f"recipe: no such file {path!r} and no packaged recipe of that "
                             f"name; known recipes: {list_recipes()}")
        resource = _zoo().joinpath(f"{path}.yaml")
        text = resource.read_text(encoding="utf-8")
        path = str(resource)
    recipe = parse_yaml(text, f"recipe: {path!r}")  # PyYAML errors, deep nesting: ValueError
    if not isinstance(recipe, dict):
        raise ValueError(f"recipe: {path} must hold a mapping with sections {SECTIONS}")
    unknown = set(recipe) - set(SECTIONS) - {"name", "source"}
    if unknown:
        raise ValueError(f"recipe: {path} has unknown sections {sorted(map(repr, unknown))}; "
                         f"expected {SECTIONS} (plus name, source)")
    for section in SECTIONS:
        recipe.setdefault(section, {})
        if not isinstance(recipe[section], dict):
            raise ValueError(f"recipe: section {section!r} of {path} must be a mapping")
    recipe.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    recipe["path"] = path
    return recipe


def model_arguments(recipe, **overrides):
    """The :func:`keras_mld.build` keyword arguments of ``recipe``'s ``model`` section:
    ``backbone``, ``head``, ``input_shape`` (``input_size`` squared), ``weights`` and the
    head's options; then ``overrides`` (build arguments, e.g. ``weights=None`` offline).

    ``head`` (an override) picks one head of a multi-head recipe (``model.heads``); the
    recipe's head options apply only to its own head.

    Word queries (``query_type: word``, zero-shot ML-Decoder: ``mldecoder_nus_zsl``): the
    model section's ``word_vectors`` (or the override ``word_vectors=``: a GloVe / word2vec
    text file, ``"glove-6b-50d"`` or a :class:`keras_mld.zsl.WordVectors`) gives the
    label vectors of ``class_names`` (:func:`keras_mld.zsl.label_vectors`: a label is the
    mean of its words' vectors) as ``label_vectors``, and ``word_dim`` follows them.

    Examples:
        >>> from keras_mld.recipes import load_recipe, model_arguments
        >>> args = model_arguments(load_recipe("demo"), head="mldecoder", class_names=["a"])
        >>> args["backbone"], args["head"], args["input_shape"], args["num_groups"]
        ('small_convnet', 'mldecoder', (64, 64, 3), 10)
    """
    model = recipe.get("model") or {}
    heads = model.get("heads") or {}
    head = overrides.pop("head", None) or model.get("head")
    if head is None:
        if len(heads) != 1:
            raise ValueError(f"head: recipe {recipe.get('name')!r} trains the heads "
                             f"{sorted(heads)}; pick one with head=...")
        head = next(iter(heads))
    if head == model.get("head"):
        head_kwargs = model.get("head_kwargs") or {}
    else:
        head_kwargs = heads.get(head) or {}
    if not isinstance(head_kwargs, dict):
        raise ValueError(f"recipe: {recipe.get('name')!r}: the options of head {head!r} must "
                         f"be a mapping, got {head_kwargs!r}")
    size = int(model.get("input_size", 224))
    args = {"backbone": model.get("backbone", "efficientnetv2_s"), "head": head,
            "input_shape": (size, size, 3)}
    if model.get("weights") is not None:
        args["weights"] = model["weights"]
    args.update(head_kwargs)
    word_vectors = overrides.pop("word_vectors", None) or model.get("word_vectors")
    args.update(overrides)
    if word_vectors is not None and args.get("query_type") == "word" \
            and args.get("label_vectors") is None:
        from keras_mld.zsl.word_vectors import label_vectors

        if not args.get("class_names"):
            raise ValueError(f"class_names: recipe {recipe.get('name')!r} builds word queries "
                             "from word_vectors; pass the class names")
        args["label_vectors"] = label_vectors(args["class_names"], word_vectors)
        args["word_dim"] = int(args["label_vectors"].shape[1])
    return args
