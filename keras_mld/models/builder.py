"""``keras_mld.build`` and ``keras_mld.list_models``: a backbone and a head by name.

The split follows keras-hub (backbone vs task): the backbone maps normalised pixels to a
feature map, the head maps features to logits, and :func:`build` joins them, behind an
:class:`~keras_mld.models.ImageClassifierPreprocessor` (resize as in training, the backbone's
normalisation), into a :class:`~keras_mld.ImageClassifier` that takes RGB pixels in
[0, 255] of any size and returns logits ``[B, num_classes]``, and that carries its class
names, thresholds and task.
"""
import keras

from keras_mld import backbones, heads
from keras_mld.heads import register_head  # noqa: F401  (re-exported)
from keras_mld.models.coco import COCO_CLASS_NAMES
from keras_mld.models.image_classifier import ImageClassifier, check_class_names
from keras_mld.models.preprocessor import ImageClassifierPreprocessor
from keras_mld.validation import check_int

TASKS = ("multilabel", "singlelabel")
NORMALIZATIONS = ("none", "unit", "symmetric", "torch", "caffe")


def list_models():
    """``{"backbones": [...], "heads": [...]}``: the names :func:`build` accepts."""
    return {"backbones": backbones.list_backbones(), "heads": heads.list_heads()}


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
        weights: for a named backbone: ``None``, ``"imagenet"`` or a weights-file path.
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
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    input_shape = _check_input_shape(input_shape)
    factory = heads.get_head(head)
    if normalization is not None and normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization: expected one of {NORMALIZATIONS} or None, got {normalization!r}")

    if isinstance(backbone, str):
        spec = backbones.get_spec(backbone)
        if None in input_shape[:2]:
            raise ValueError(f"input_shape: a named backbone needs a static (H, W, 3), got {input_shape}")
        backbone_model = backbones.create_backbone(backbone, input_shape, weights)
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
        raise ValueError(f"backbone: expected a name from {backbones.list_backbones()} or a "
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

