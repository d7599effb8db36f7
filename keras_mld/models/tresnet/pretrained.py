"""timm's published TResNet weights by tag: ``build("tresnet_m", weights="miil_in21k")``.

timm (``timm/models/tresnet.py``, ``default_cfgs``) publishes its TResNet weights on the
Hugging Face Hub as ``timm/<model>.<tag>`` repositories holding ``model.safetensors`` in
timm's layout. A keras-mld backbone takes the tags of the timm model with the same
configuration (:data:`TIMM_MODELS`): keras-mld's ``tresnet_l`` (the official ML-Decoder
TResNet-L) is timm's ``tresnet_v2_l``; timm's ``tresnet_l`` / ``tresnet_xl`` are keras-mld's
``tresnet_l_timm`` / ``tresnet_xl_timm``; the official TResNet-XL has no timm weights.

The file is downloaded by ``huggingface_hub`` (:mod:`keras_mld.checkpoints.hub`), converted
strictly by :func:`keras_mld.models.tresnet.convert.load_weights` (every ``body.*`` key used,
every shape checked; the configuration read from the file must be the backbone's), and the
converted backbone weights are cached atomically as
``$KERAS_MLD_CACHE_DIR/weights/timm/<model>.<tag>.weights.h5``: a second build reads them
without the network.
"""
import os

from keras_mld.atomic import save_model
from keras_mld.checkpoints.download import cache_dir
from keras_mld.checkpoints.hub import hub_download
from keras_mld.checkpoints.reader import read_checkpoint
from keras_mld.models.tresnet.convert import infer_config, load_weights
from keras_mld.models.tresnet.tresnet import TRESNET_VARIANTS

TIMM_FILE = "model.safetensors"
IN21K_CLASSES = 11221  # ImageNet-21K-P (winter 2021), the MIIL pretraining
# keras-mld backbone -> the timm model of the same configuration
TIMM_MODELS = {"tresnet_m": "tresnet_m", "tresnet_l": "tresnet_v2_l",
               "tresnet_v2_l": "tresnet_v2_l", "tresnet_l_timm": "tresnet_l",
               "tresnet_xl_timm": "tresnet_xl"}
# timm model -> {tag: (num_classes, image side)}, as timm's default_cfgs publish them
TIMM_TAGS = {
    "tresnet_m": {"miil_in21k": (IN21K_CLASSES, 224), "miil_in21k_ft_in1k": (1000, 224),
                  "miil_in1k": (1000, 224), "miil_in1k_448": (1000, 448)},
    "tresnet_l": {"miil_in1k": (1000, 224), "miil_in1k_448": (1000, 448)},
    "tresnet_xl": {"miil_in1k": (1000, 224), "miil_in1k_448": (1000, 448)},
    "tresnet_v2_l": {"miil_in21k": (IN21K_CLASSES, 224), "miil_in21k_ft_in1k": (1000, 224)},
}


def weight_tags(backbone):
    """The timm tags ``build(backbone, weights=tag)`` accepts (sorted; empty for none).

    Examples:
        >>> from keras_mld.models.tresnet.pretrained import weight_tags
        >>> weight_tags("tresnet_l"), weight_tags("tresnet_xl")
        (('miil_in21k', 'miil_in21k_ft_in1k'), ())
    """
    return tuple(sorted(TIMM_TAGS.get(TIMM_MODELS.get(backbone), {})))


def timm_models():
    """``["tresnet_m.miil_in21k", ...]``: every timm TResNet ``hf://timm/<name>`` serves."""
    return sorted(f"{model}.{tag}" for model, tags in TIMM_TAGS.items() for tag in tags)


def split_timm_name(name):
    """``"tresnet_m.miil_in21k"`` -> ``("tresnet_m", "miil_in21k")`` (``ValueError`` listing
    the published names)."""
    model, _, tag = name.partition(".") if isinstance(name, str) else ("", "", "")
    if tag not in TIMM_TAGS.get(model, {}):
        raise ValueError(f"hf://timm/{name}: not a timm TResNet keras-mld converts; accepted: "
                         f"{['hf://timm/' + n for n in timm_models()]}")
    return model, tag


def read_timm_state(model, tag, variant=None):
    """Downloads ``timm/<model>.<tag>`` and returns its state dict, checked to hold the
    configuration of keras-mld's ``variant`` (default: the timm model's counterpart)."""
    repo_id = f"timm/{model}.{tag}"
    path = hub_download(repo_id, TIMM_FILE)
    try:
        state, _ = read_checkpoint(path)
        cfg = infer_config(state)
    except ValueError as err:
        raise ValueError(f"hf://{repo_id}: {TIMM_FILE} is not a timm TResNet checkpoint ({err}); "
                         "if it is damaged, delete it from the Hub cache (hf cache rm) and "
                         "try again") from None
    if variant is None:
        variant = next(v for v, m in TIMM_MODELS.items() if m == model)
    layers, width, v2 = TRESNET_VARIANTS[variant]
    stem = int(64 * width) // 8 * 8 if v2 else int(64 * width)  # as tresnet() builds it
    want = (tuple(layers), stem, v2)
    got = (cfg["layers"], round(64 * cfg["width_factor"]), cfg["v2"])
    if got != want:
        raise ValueError(f"hf://{repo_id}: {TIMM_FILE} holds a TResNet with (layers, stem "
                         f"channels, v2) = {got}, not {variant}'s {want}")
    return state


def load_timm_weights(model, variant, tag):
    """Fills the keras-mld TResNet ``model`` (a ``variant`` without classifier) with timm's
    ``tag`` weights: from the converted cache, else downloaded and converted (then cached)."""
    timm_model = TIMM_MODELS.get(variant)
    if tag not in TIMM_TAGS.get(timm_model, {}):
        raise ValueError(f"weights: {variant} takes the timm tags {list(weight_tags(variant))}, "
                         f"got {tag!r}")
    cached = cache_dir("weights", "timm", f"{timm_model}.{tag}.weights.h5")
    if os.path.isfile(cached):
        try:
            model.load_weights(cached)
            return model
        except Exception as err:  # h5py OSError, Keras ValueError on a mismatch
            raise ValueError(f"weights: the cached file {cached} could not be loaded ({err}); "
                             "delete it to download and convert again") from None
    state = read_timm_state(timm_model, tag, variant)
    try:
        load_weights(model, state)  # strict: every body.* key used, every shape checked
    except ValueError as err:
        raise ValueError(f"hf://timm/{timm_model}.{tag}: {err}") from None
    save_model(model, cached, caller="weights cache")
    return model
