"""The TResNet variants as named backbones (input x / 255, no mean / std: ``"unit"``)."""
import functools

from keras_mld.models.tresnet.tresnet import TRESNET_VARIANTS, tresnet_variant
from keras_mld.registry import BackboneSpec, register_backbone


def create(variant, input_shape, weights=None):
    """A TResNet variant without classifier, ``[B, H/32, W/32, C]``."""
    return tresnet_variant(variant, input_shape=input_shape, weights=weights)


for _name in TRESNET_VARIANTS:
    register_backbone(BackboneSpec(_name, functools.partial(create, _name), "unit", min_size=32))
