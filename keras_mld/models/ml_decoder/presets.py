"""ML-Decoder's named presets: the packaged recipes whose model is an ML-Decoder head
(``keras_mld/zoo/<name>.yaml``): the paper's MS-COCO recipe and the metric-learning paper's
AAM recipes (Prokofiev & Sovrasov, arXiv:2209.06585)."""
import functools

from keras_mld.models.builder import build_from_recipe
from keras_mld.registry import PresetSpec, register_preset

RECIPE_PRESETS = {
    "mldecoder_coco": "ML-Decoder on MS-COCO (Ridnik et al., arXiv:2111.12933)",
    "mldecoder_nus_zsl": "zero-shot ML-Decoder (word queries) on NUS-WIDE (Ridnik et al., "
                         "arXiv:2111.12933); needs class_names and word_vectors",
    "mldecoder_openimages": "ML-Decoder, 200 groups, TResNet-M on Open Images (Ridnik et al., "
                            "arXiv:2111.12933); needs class_names",
    "aam_coco": "ML-Decoder + AAM loss on MS-COCO (Prokofiev & Sovrasov, arXiv:2209.06585)",
    "aam_voc": "ML-Decoder + AAM loss on Pascal VOC (Prokofiev & Sovrasov, arXiv:2209.06585)",
    "aam_nus_wide": "ML-Decoder + AAM loss on NUS-WIDE (Prokofiev & Sovrasov, arXiv:2209.06585)",
    "aam_vg500": "ML-Decoder + AAM loss on Visual Genome 500 (Prokofiev & Sovrasov, "
                 "arXiv:2209.06585)",
}

for _name, _description in RECIPE_PRESETS.items():
    register_preset(PresetSpec(_name, functools.partial(build_from_recipe, _name), _description))
