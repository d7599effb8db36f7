"""Weight decay without decay on biases and normalisation layers
(Prokofiev & Sovrasov (arXiv:2209.06585) section 3.5; ML-Decoder (Ridnik et al., arXiv:2111.12933)
appendix C).

Keras optimizers apply *decoupled* weight decay when built with ``weight_decay=wd``
(``keras.optimizers.AdamW``, or ``Adam``/``SGD``/... with ``weight_decay``): before each
update, ``w <- w - lr * wd * w`` for every variable the optimizer does not exclude.
:func:`configure_weight_decay` tells the optimizer which variables to exclude, via
``optimizer.exclude_from_weight_decay(var_list=...)`` (before the optimizer is built).

Variables are identified by the layer that owns them, not only by their name:

- every variable of a normalisation layer (``BatchNormalization``, ``LayerNormalization``,
  ``GroupNormalization``, ``RMSNormalization``, or a custom layer whose class name looks
  like ``*BatchNorm*``/``*LayerNorm*``/``*GroupNorm*``/``*RMSNorm*``/``*InstanceNorm*``):
  gamma and beta;
- biases: the variable a layer holds as its ``bias`` attribute, or whose name is ``bias``;
- with ``exclude_1d=True`` (default) every variable of rank <= 1, as the official
  ML-Decoder/ASL ``add_weight_decay`` does (``len(shape) == 1 or name.endswith(".bias")``),
  which also covers e.g. layer-scale vectors; except the variables a layer lists in its
  ``matrix_variables`` attribute (kept 1-D here, matrices in the official layout: the
  zero-shot head's shared projection ``[D]`` is ``duplicate_pooling [D, 1]`` there, and
  decayed);
- with ``exclude_embeddings=True`` the tables of ``keras.layers.Embedding`` layers.

Note: Keras multiplies the decay by the learning rate (as ``torch.optim.AdamW``), so a
given ``weight_decay`` is not the coupled L2 coefficient of ``torch.optim.Adam``.
"""
import re

import keras

__all__ = ["weight_decay_exclusions", "configure_weight_decay", "is_norm_layer"]

_NORM_CLASSES = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                 keras.layers.GroupNormalization, keras.layers.RMSNormalization)
_NORM_NAME = re.compile(r"(Batch|Layer|Group|RMS|Instance)Norm", re.IGNORECASE)


def is_norm_layer(layer):
    """True for normalisation layers (by class, or by a ``*Norm*`` class name)."""
    if isinstance(layer, _NORM_CLASSES):
        return True
    return any(_NORM_NAME.search(cls.__name__) for cls in type(layer).__mro__
               if cls.__module__.split(".")[0] not in ("keras", "builtins"))


def _own_variables(layer):
    own = list(getattr(layer, "_trainable_variables", [])) + list(
        getattr(layer, "_non_trainable_variables", []))
    return own


def _all_layers(model):
    if hasattr(model, "_flatten_layers"):
        return list(model._flatten_layers(include_self=True, recursive=True))
    return [model]


def weight_decay_exclusions(model, exclude_1d=True, exclude_embeddings=False):
    """Trainable variables of ``model`` that must not be weight-decayed (see module doc).

    Returns a list of variables, in ``model.trainable_variables`` order.
    """
    excluded = set()
    owned = set()
    matrices = set()
    for layer in _all_layers(model):
        matrices.update(id(v) for v in getattr(layer, "matrix_variables", ()))
        own = _own_variables(layer)
        owned.update(id(v) for v in own)
        if is_norm_layer(layer):
            excluded.update(id(v) for v in own)
            continue
        if exclude_embeddings and isinstance(layer, keras.layers.Embedding):
            excluded.update(id(v) for v in own)
        bias = getattr(layer, "bias", None)
        if isinstance(bias, keras.Variable):
            excluded.add(id(bias))
    out = []
    for v in model.trainable_variables:
        name = v.name.split("/")[-1].split(":")[0]
        if (id(v) in excluded or name == "bias"
                or (exclude_1d and len(v.shape) <= 1 and id(v) not in matrices)):
            out.append(v)
    return out


def configure_weight_decay(optimizer, model, exclude_1d=True, exclude_embeddings=False,
                           extra_variables=()):
    """Exclude biases / normalisation variables of ``model`` from ``optimizer``'s decay.

    Must be called before the optimizer is built (before ``fit``/``apply``); it *replaces*
    any earlier ``exclude_from_weight_decay(var_list=...)`` setting (Keras semantics), and
    keeps no name pattern. ``extra_variables`` are excluded as well. Returns the excluded
    variables.
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError("configure_weight_decay: optimizer must be a keras.optimizers."
                         f"Optimizer, got {type(optimizer).__name__}")
    if getattr(optimizer, "built", False):
        raise ValueError("configure_weight_decay: the optimizer is already built; call it "
                         "before fit() / the first update")
    excluded = weight_decay_exclusions(model, exclude_1d=exclude_1d,
                                       exclude_embeddings=exclude_embeddings)
    ids = {id(v) for v in excluded}
    excluded += [v for v in extra_variables if id(v) not in ids]
    optimizer.exclude_from_weight_decay(var_list=excluded)
    return excluded
