"""The official ML-Decoder checkpoints as named presets (``mldecoder_tresnet_m_coco_224``...).

Alibaba-MIIL/ML_Decoder's ``MODEL_ZOO.md`` publishes TResNet + ML-Decoder checkpoints
(Ridnik et al., "ML-Decoder: Scalable and Versatile Classification Head", arXiv:2111.12933)
under :data:`OFFICIAL_BASE_URL`. ``ImageClassifier.from_preset(name)``:

1. returns the cached preset ``$KERAS_MLD_CACHE_DIR/presets/<name>`` when there is one;
2. else downloads the file from ``$KERAS_MLD_ML_DECODER_MIRROR`` (another base URL holding
   the same file names) or the official URL (resumable, see
   :func:`keras_mld.checkpoints.download.download_url`);
3. converts it (:func:`keras_mld.models.ml_decoder.convert.convert_ml_decoder_checkpoint`:
   every key used, every shape checked; class names from the checkpoint's ``idx_to_class``)
   and saves the preset atomically; the downloaded file is then removed.

Since 2026-05 the official host answers 403 (upstream issue #87): the error then names the
URL and shows the command that converts a copy the user already has.
"""
import functools
import os

from keras_mld.checkpoints.download import DownloadError, cache_dir, download_url
from keras_mld.models.image_classifier import ImageClassifier
from keras_mld.models.ml_decoder.convert import convert_ml_decoder_checkpoint
from keras_mld.registry import PresetSpec, register_preset

OFFICIAL_BASE_URL = "https://miil-public-eu.oss-eu-central-1.aliyuncs.com/model-zoo/ML_Decoder/"
MIRROR_ENV = "KERAS_MLD_ML_DECODER_MIRROR"
UPSTREAM_ISSUE = "https://github.com/Alibaba-MIIL/ML_Decoder/issues/87"
# name -> (file, image side, description with the paper's / model zoo's figure)
OFFICIAL_CHECKPOINTS = {
    "mldecoder_tresnet_m_coco_224": (
        "tresnet_m_COCO_224_84_2.pth", 224, "official ML-Decoder, TResNet-M, MS-COCO 224 "
        "(84.2 mAP)"),
    "mldecoder_tresnet_l_coco_448": (
        "tresnet_l_COCO__448_90_0.pth", 448, "official ML-Decoder, TResNet-L, MS-COCO 448 "
        "(90.1 mAP)"),
    "mldecoder_tresnet_xl_coco_640": (
        "tresnet_xl_COCO_640_91_4.pth", 640, "official ML-Decoder, TResNet-XL, MS-COCO 640 "
        "(91.4 mAP)"),
    "mldecoder_tresnet_m_open_images_224": (
        "tresnet_m_open_images_200_groups_86_8.pth", 224, "official ML-Decoder, TResNet-M, "
        "Open Images (9,605 classes, 200 groups), 224 (86.8 mAP)"),
    "mldecoder_tresnet_l_stanford_cars_384": (
        "tresnet_l_stanford_card_96.41.pth", 384, "official ML-Decoder, TResNet-L, "
        "Stanford Cars 384 (96.41% top-1; single-label)"),
}
# trained for single-label classification (softmax scores)
SINGLE_LABEL = ("mldecoder_tresnet_l_stanford_cars_384",)
# name -> SHA-256 of the official file, where known (none are: the host refuses since 2026-05)
OFFICIAL_SHA256 = {}


def official_url(filename):
    """The file's URL: under ``$KERAS_MLD_ML_DECODER_MIRROR`` when set, else the official."""
    base = os.environ.get(MIRROR_ENV) or OFFICIAL_BASE_URL
    return base.rstrip("/") + "/" + filename


def _what_to_do(name, filename, side, url, why):
    return ValueError(
        f"preset {name!r}: {why}. The official ML-Decoder model zoo answers 403 since "
        f"2026-05 ({UPSTREAM_ISSUE}); set {MIRROR_ENV} to a base URL holding {filename}, or "
        f"convert a copy you already have:\n"
        f"    keras-mld convert {filename} --image-size {side} --out PRESET_DIR\n"
        f"then ImageClassifier.from_preset('PRESET_DIR'). (URL tried: {url})")


def load_official(name, **kwargs):
    """The :class:`keras_mld.ImageClassifier` of the official checkpoint ``name`` (see the
    module docstring); no build arguments."""
    if kwargs:
        raise ValueError(f"from_preset: {name!r} is a trained checkpoint and takes no build "
                         f"arguments, got {sorted(kwargs)}")
    filename, side, _ = OFFICIAL_CHECKPOINTS[name]
    folder = cache_dir("presets", name)
    if os.path.isdir(folder):
        return ImageClassifier.from_preset(folder)
    url = official_url(filename)
    download = cache_dir("downloads", filename)
    try:
        download_url(url, download, sha256=OFFICIAL_SHA256.get(name))
    except DownloadError as err:
        if err.status in (401, 403, 404):
            raise _what_to_do(name, filename, side, url,
                              f"the host answered HTTP {err.status}") from None
        raise _what_to_do(name, filename, side, url, err.why) from None
    try:
        model, _ = convert_ml_decoder_checkpoint(download, image_size=side, name=name)
    except Exception as err:  # the reader's contract is ValueError; a damaged file may raise
        os.remove(download)   # another (EOFError, zipfile's): reported alike, never kept
        raise _what_to_do(name, filename, side, url, f"the downloaded file is damaged or not "
                          f"the official checkpoint ({err}); it was removed") from None
    if name in SINGLE_LABEL:
        model = ImageClassifier(model.backbone, model.head, model.preprocessor,
                                class_names=model.class_names, task="singlelabel", name=name)
    model.save_to_preset(folder, overwrite=True)
    os.remove(download)
    return model


for _name, (_file, _side, _description) in OFFICIAL_CHECKPOINTS.items():
    register_preset(PresetSpec(_name, functools.partial(load_official, _name), _description))
