"""The TResNet variants as named backbones (input x / 255, no mean / std: ``"unit"``); their
named weights are timm's published tags (:mod:`keras_mld.models.tresnet.pretrained`)."""
import functools

from keras_mld.models.tresnet.pretrained import load_timm_weights, weight_tags
from keras_mld.models.tresnet.tresnet import TRESNET_VARIANTS, tresnet_variant
from keras_mld.registry import BackboneSpec, register_backbone


def create(variant, input_shape, weights=None):
    """A TResNet variant without classifier, ``[B, H/32, W/32, C]``; ``weights`` None or one of
    timm's tags for it (e.g. ``"miil_in21k"``: downloaded from the Hub, converted, cached)."""
    model = tresnet_variant(variant, input_shape=input_shape)
    if weights is not None:
        load_timm_weights(model, variant, weights)
    return model


for _name in TRESNET_VARIANTS:
    register_backbone(BackboneSpec(_name, functools.partial(create, _name), "unit", min_size=32,
                                   weights=weight_tags(_name)))
