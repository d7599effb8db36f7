"""TResNet (Ridnik et al., arXiv:2003.13630): the backbone and its layers (``tresnet``), the
named variants as backbones (``backbones``), the timm / official weight converter
(``convert``), timm's published weights by tag (``pretrained``) and the ``hf://timm/...``
presets (``presets``)."""
from keras_mld.models.tresnet import backbones, presets  # noqa: F401  (registers them)
from keras_mld.models.tresnet.convert import (  # noqa: F401
    convert_tresnet, infer_config, load_weights, to_timm_layout)
from keras_mld.models.tresnet.tresnet import (  # noqa: F401
    TRESNET_VARIANTS, BlurPool2D, SpaceToDepth, tresnet, tresnet_variant)
