"""TResNet's named presets: ``hf://timm/<model>.<tag>``, timm's published TResNet
classifiers (:func:`keras_mld.models.tresnet.pretrained.timm_models`), as keras-hub users
write ``from_preset("hf://timm/resnet50.a1_in1k")``: the TResNet with timm's weights, global
average pooling and timm's ``head.fc`` classifier (its class count: 1000 for ImageNet-1K,
11,221 for ImageNet-21K-P) as a single-label :class:`keras_mld.ImageClassifier` at the tag's
image size. Use it as it is, or take its ``backbone`` for a multi-label head."""
import functools

from keras_mld.checkpoints.loader import WeightLoader
from keras_mld.models.builder import build
from keras_mld.models.tresnet.convert import load_weights
from keras_mld.models.tresnet.pretrained import (
    TIMM_MODELS, TIMM_TAGS, read_timm_state, split_timm_name, timm_models)
from keras_mld.models.tresnet.tresnet import tresnet_variant
from keras_mld.registry import PresetSpec, register_preset


def timm_classifier(name, input_shape=None, **kwargs):
    """The classifier of ``hf://timm/<name>`` (e.g. ``"tresnet_m.miil_in21k"``); downloads
    through ``huggingface_hub``. ``input_shape`` defaults to the tag's ``(side, side, 3)``;
    nothing else can be changed (take ``model.backbone`` for another head)."""
    if kwargs:
        raise ValueError(f"from_preset: hf://timm/{name} takes only input_shape, got "
                         f"{sorted(kwargs)}; for another head build it with "
                         f"keras_mld.build(backbone, head=..., weights=<tag>)")
    model, tag = split_timm_name(name)
    num_classes, side = TIMM_TAGS[model][tag]
    variant = next(v for v, m in TIMM_MODELS.items() if m == model)
    state = read_timm_state(model, tag, variant)
    shape = tuple(input_shape) if input_shape is not None else (side, side, 3)
    backbone = tresnet_variant(variant, input_shape=shape)
    where = f"hf://timm/{name}"
    try:
        used = load_weights(backbone, state)  # strict over body.*
        fc = state.get("head.fc.weight")
        if fc is None or fc.shape[0] != num_classes:
            raise ValueError(f"head.fc.weight has shape {None if fc is None else fc.shape}, "
                             f"timm publishes {num_classes} classes for {tag}")
        classifier = build(backbone, head="gap", num_classes=num_classes, input_shape=shape,
                           normalization="unit", task="singlelabel",
                           name=name.replace(".", "_"))
        loader = WeightLoader(state, where)
        loader.dense(classifier.get_layer("gap_head").classifier, "head.fc")
        loader.used |= used
        loader.check_all_used()  # every entry of the file
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return classifier


for _name in timm_models():
    register_preset(PresetSpec(f"hf://timm/{_name}", functools.partial(timm_classifier, _name),
                               f"timm's TResNet {_name} (Hugging Face Hub), GAP + its classifier"))
