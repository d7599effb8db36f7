"""Query2Label's named presets: the packaged recipes whose model is a Query2Label head
(``keras_mld/zoo/<name>.yaml``): the official MS-COCO training (Liu et al.,
arXiv:2107.10834)."""
import functools

from keras_mld.models.builder import build_from_recipe
from keras_mld.registry import PresetSpec, register_preset

RECIPE_PRESETS = {
    "query2label_coco": "Query2Label (ResNet-101) on MS-COCO (Liu et al., arXiv:2107.10834)",
}

for _name, _description in RECIPE_PRESETS.items():
    register_preset(PresetSpec(_name, functools.partial(build_from_recipe, _name), _description))
