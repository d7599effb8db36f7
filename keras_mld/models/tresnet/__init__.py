"""TResNet (Ridnik et al., arXiv:2003.13630): the backbone and its layers (``tresnet``), the
named variants as backbones (``backbones``), the timm / official weight converter
(``convert``)."""
from keras_mld.models.tresnet import backbones  # noqa: F401  (registers the variants)
from keras_mld.models.tresnet.convert import (  # noqa: F401
    convert_tresnet, infer_config, load_weights, to_timm_layout)
from keras_mld.models.tresnet.tresnet import (  # noqa: F401
    TRESNET_VARIANTS, BlurPool2D, SpaceToDepth, tresnet, tresnet_variant)
