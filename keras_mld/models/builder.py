"""``keras_mld.build`` and ``keras_mld.list_models``: a backbone and a head by name.

The names come from :mod:`keras_mld.registry`, filled by the architecture folders of
:mod:`keras_mld.models`.

The split follows keras-hub (backbone vs task): the backbone maps normalised pixels to a
feature map, the head maps features to logits, and :func:`build` joins them, behind an
:class:`~keras_mld.models.ImageClassifierPreprocessor` (resize as in training, the backbone's
normalisation), into a :class:`~keras_mld.ImageClassifier` that takes RGB pixels in
[0, 255] of any size and returns logits ``[B, num_classes]``, and that carries its class
names, thresholds and task.
"""
import os

import keras

from keras_mld.layers.preprocessing import NORMALIZATION_MODES
from keras_mld.metadata import check_class_names, check_task
from keras_mld.models.coco import COCO_CLASS_NAMES
from keras_mld.models.image_classifier import ImageClassifier
from keras_mld.models.preprocessor import ImageClassifierPreprocessor
from keras_mld.recipes import load_recipe, model_arguments
from keras_mld.registry import get_backbone, get_head, list_backbones, list_heads
from keras_mld.validation import check_int


def list_models():
    """``{"backbones": [...], "heads": [...], "weights": {backbone: [...]}}``: the names
    :func:`build` accepts; ``weights`` lists each backbone's named weights (``"imagenet"``
    for the Keras applications, timm's tags such as ``"miil_in21k"`` for the TResNets)."""
    return {"backbones": list_backbones(), "heads": list_heads(),
            "weights": {name: list(get_backbone(name).weights) for name in list_backbones()
                        if get_backbone(name).weights}}


def create_backbone(name, input_shape=(224, 224, 3), weights=None):
    """Builds the named backbone without its classifier (output ``[B, H', W', C]``).

    Args:
        name: a name from ``list_models()["backbones"]``.
        input_shape: ``(H, W, 3)``; H and W at least the backbone's ``min_size``.
        weights: ``None`` (random init, offline), one of the backbone's named weights
            (``list_models()["weights"]``: ``"imagenet"`` for the Keras applications,
            downloaded by Keras; timm's tags for the TResNets, e.g. ``"miil_in21k"``,
            downloaded from the Hugging Face Hub, converted and cached) or a path to a
            weights file (``.weights.h5``) of the same architecture.
    """
    spec = get_backbone(name)
    h, w = input_shape[0], input_shape[1]
    if (h is not None and h < spec.min_size) or (w is not None and w < spec.min_size):
        raise ValueError(f"input_shape: {name} needs H and W >= {spec.min_size}, got "
                         f"{tuple(input_shape)}")
    named = weights in spec.weights if isinstance(weights, str) else False
    if not (weights is None or named or isinstance(weights, (str, os.PathLike))):
        raise ValueError(f"weights: expected None, one of {list(spec.weights)} or a path to a "
                         f"weights file, got {weights!r}")
    path = None
    if weights is not None and not named:
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise ValueError(f"weights: no such weights file {path!r}; {name} takes None, "
                             f"{list(spec.weights)} or a path to a .weights.h5 file of it")
    model = spec.create(tuple(input_shape), weights if named else None)
    if path is not None:
        model.load_weights(path)
    return model


def build_from_recipe(recipe, **overrides):
    """The model of a recipe (a name from :func:`keras_mld.recipes.list_recipes`, a path or
    a loaded recipe) with :func:`build` arguments ``overrides`` on top
    (:func:`keras_mld.recipes.model_arguments`). A recipe that is not an MS-COCO one needs
    ``class_names`` (or ``num_classes``) for its dataset."""
    recipe = recipe if isinstance(recipe, dict) else load_recipe(recipe)
    kwargs = model_arguments(recipe, **overrides)
    if "coco" not in recipe.get("name", "") and kwargs.get("class_names") is None \
            and kwargs.get("num_classes") is None:
        raise ValueError(f"class_names: preset {recipe.get('name')!r} is not an MS-COCO recipe; "
                         "pass class_names=[...] (or num_classes=N) for its dataset")
    return build(**kwargs)


def build(backbone, head="mldecoder", num_classes=None, input_shape=(224, 224, 3), weights=None,
          task="multilabel", normalization=None, name=None, class_names=None, thresholds=None,
          **head_kwargs):
    """Builds ``backbone`` + ``head`` as one :class:`~keras_mld.ImageClassifier`.

    Args:
        backbone: a name from ``list_models()["backbones"]`` or any ``keras.Model`` whose
            output is a spatial map ``[B,H,W,C]`` or tokens ``[B,T,C]`` (a keras-cv or
            keras-hub backbone instance included).
        head: a name from ``list_models()["heads"]``.
        num_classes: number of labels N (>= 1). ``task="singlelabel"`` with N classes
            gives a softmax classifier (e.g. ImageNet, N = 1000). Default: the length of
            ``class_names``; with neither, the 80 MS-COCO classes (as ``keras.applications``
            models default to ImageNet's classes).
        input_shape: ``(H, W, 3)`` the backbone takes (images of any size are resized to
            it); H and W may be ``None`` for a backbone instance (no resizing then).
        weights: for a named backbone: ``None``, one of its named weights (``"imagenet"``
            for the Keras applications, ``"miil_in21k"`` and timm's other tags for the
            TResNets: ``list_models()["weights"]``) or a weights-file path
            (:func:`create_backbone`).
        task: ``"multilabel"`` (sigmoid scores) or ``"singlelabel"`` (softmax scores).
        normalization: how RGB [0,255] is mapped for the backbone (an
            :class:`~keras_mld.layers.ImageNormalization` mode). Default: the named
            backbone's own convention, ``"unit"`` (x / 255) for a backbone instance.
        name: model name (default ``<backbone>_<head>``).
        class_names: N unique class names (default: COCO's when ``num_classes`` is None,
            else ``"0"`` ... ``"N-1"``).
        thresholds: per-class score thresholds in [0, 1] (default 0.5), as
            :class:`~keras_mld.ImageClassifier` accepts them.
        **head_kwargs: passed to the head layer (e.g. ``num_groups=100``, ``embed_dim=768``).

    Returns:
        an :class:`~keras_mld.ImageClassifier`: input ``images`` ``[B,H,W,3]`` in [0, 255]
        (plus ``known_labels`` for ``head="ctran", known_labels_input=True``), output
        logits ``[B, num_classes]`` in float32 (also under mixed precision).

    Examples:
        >>> import keras_mld
        >>> model = keras_mld.build("small_convnet", head="mldecoder", num_classes=5,
        ...                         input_shape=(32, 32, 3), weights=None, num_groups=5,
        ...                         embed_dim=16, num_heads=2, ff_dim=32)
        >>> model.output_shape
        (None, 5)
    """
    if num_classes is None and class_names is None:
        class_names = list(COCO_CLASS_NAMES)
    if class_names is not None:
        class_names = check_class_names(class_names, num_classes)
        num_classes = len(class_names)
    num_classes = check_int("build", "num_classes", num_classes, minimum=1)
    check_task(task)
    input_shape = _check_input_shape(input_shape)
    factory = get_head(head)
    if normalization is not None and normalization not in NORMALIZATION_MODES:
        raise ValueError(f"normalization: expected one of {NORMALIZATION_MODES} or None, got "
                         f"{normalization!r}")

    if isinstance(backbone, str):
        spec = get_backbone(backbone)
        if None in input_shape[:2]:
            raise ValueError(f"input_shape: a named backbone needs a static (H, W, 3), got "
                             f"{input_shape}")
        backbone_model = create_backbone(backbone, input_shape, weights)
        backbone_name = backbone
        normalization = normalization or spec.normalization
    elif isinstance(backbone, keras.Model):
        if weights is not None:
            raise ValueError("weights: only for a named backbone; load weights into the instance "
                             f"you pass instead (got weights={weights!r})")
        backbone_model = backbone
        backbone_name = backbone.name
        normalization = normalization or "unit"
    else:
        raise ValueError(f"backbone: expected a name from {list_backbones()} or a "
                         f"keras.Model, got {type(backbone).__name__}")

    size = None if None in input_shape[:2] else tuple(input_shape[:2])
    preprocessor = ImageClassifierPreprocessor(size, normalization, name="preprocessor")
    probe = backbone_model.compute_output_spec(keras.KerasTensor((None, *input_shape)))
    if isinstance(probe, (list, tuple, dict)):
        raise ValueError(f"backbone: expected a single output [B,H,W,C] or [B,T,C], got "
                         f"{type(probe).__name__} of outputs")
    if len(probe.shape) not in (3, 4):
        raise ValueError(f"backbone: output must be [B,H,W,C] or [B,T,C], got shape {probe.shape}")
    features = keras.Input(shape=probe.shape[1:], name="features", dtype=probe.dtype)
    inputs = {"features": features}
    logits = factory(features, num_classes, inputs, **head_kwargs)
    head_model = keras.Model(list(inputs.values()) if len(inputs) > 1 else features, logits,
                             name="head")
    return ImageClassifier(backbone_model, head_model, preprocessor, class_names=class_names,
                           thresholds=thresholds, task=task,
                           name=name or f"{backbone_name}_{head}".replace("+", "_"))


def _check_input_shape(input_shape):
    try:
        shape = tuple(None if d is None else int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"input_shape: expected (H, W, 3), got {input_shape!r}") from None
    if len(shape) != 3 or shape[2] != 3 or any(d is not None and d < 1 for d in shape[:2]):
        raise ValueError(f"input_shape: expected (H, W, 3) with positive H, W (RGB), got {input_shape!r}")
    return shape

