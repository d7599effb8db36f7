"""C-Tran's named presets: the packaged recipes whose model is a C-Tran head
(``keras_mld/zoo/<name>.yaml``): the official MS-COCO training (Lanchantin et al.,
arXiv:2011.14027). The preset builds the inference model (images only, every label
unknown); ``keras-mld train`` adds the ``known_labels`` input for label-mask training."""
import functools

from keras_mld.models.builder import build_from_recipe
from keras_mld.registry import PresetSpec, register_preset

RECIPE_PRESETS = {
    "ctran_coco": "C-Tran (ResNet-101) on MS-COCO (Lanchantin et al., arXiv:2011.14027)",
}

for _name, _description in RECIPE_PRESETS.items():
    register_preset(PresetSpec(_name, functools.partial(build_from_recipe, _name), _description))
