"""The registries: names -> backbones, heads and presets.

A leaf: it imports no model. Each architecture folder under :mod:`keras_mld.models`
registers what it provides when it is imported (``keras_mld.models`` imports every folder),
in the manner of timm's ``@register_model`` and keras-hub's ``register_presets``:

- a **backbone** (:class:`BackboneSpec`): a function ``create(input_shape, weights)`` that
  builds a feature extractor ``[B, H, W, C]`` without classifier, its input normalisation and
  the named weights it accepts;
- a **head**: a factory ``factory(features, num_classes, inputs, **head_kwargs) -> logits``
  where ``features`` is the backbone's symbolic output (``[B,H,W,C]`` or ``[B,T,C]``),
  ``inputs`` a dict of the model's symbolic inputs to which a factory may add extra inputs
  (C-Tran's ``known_labels``) and ``logits`` is ``[B, num_classes]``
  (:func:`register_head`, also public as ``keras_mld.register_head``);
- a **preset** (:class:`PresetSpec`): a name and a function ``load(**build_overrides)``
  returning a :class:`keras_mld.ImageClassifier`.

Examples:
    >>> from keras_mld import registry
    >>> @registry.register_head("my_gap", doc="GAP then Dense")
    ... def my_gap(features, num_classes, inputs, **kwargs):
    ...     import keras
    ...     pooled = keras.layers.GlobalAveragePooling2D()(features)
    ...     return keras.layers.Dense(num_classes)(pooled)
    >>> "my_gap" in registry.list_heads()
    True
"""
import dataclasses

_BACKBONES = {}
_HEADS = {}
_HEAD_DOCS = {}
_PRESETS = {}


# ----------------------------------------------------------------------------- backbones
@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """One named backbone.

    Attributes:
        name: the name :func:`keras_mld.build` takes.
        create: ``create(input_shape, weights)`` -> ``keras.Model`` ``[B, H', W', C]``;
            ``weights`` is None or one of ``weights`` (files are loaded by the builder).
        normalization: the :class:`keras_mld.layers.ImageNormalization` mode mapping RGB
            [0, 255] to what the backbone expects (``"none"`` where it rescales inside).
        min_size: the smallest input height and width.
        weights: the named weights ``create`` accepts (e.g. ``("imagenet",)``).
    """

    name: str
    create: object
    normalization: str
    min_size: int = 32
    weights: tuple = ()


def register_backbone(spec):
    """Adds a :class:`BackboneSpec` (a later one of the same name replaces the earlier)."""
    if not isinstance(spec, BackboneSpec):
        raise ValueError(f"register_backbone: spec must be a BackboneSpec, got "
                         f"{type(spec).__name__}")
    _BACKBONES[spec.name] = spec
    return spec


def list_backbones():
    """Sorted backbone names."""
    return sorted(_BACKBONES)


def get_backbone(name):
    """The :class:`BackboneSpec` of ``name`` (``ValueError`` naming the accepted ones)."""
    if not isinstance(name, str) or name not in _BACKBONES:
        raise ValueError(f"backbone: unknown name {name!r}; accepted names: {list_backbones()} "
                         "or any keras.Model whose output is [B,H,W,C] or [B,T,C].")
    return _BACKBONES[name]


# ----------------------------------------------------------------------------- heads
def register_head(name, doc=""):
    """Decorator registering a head factory under ``name`` (used by :func:`keras_mld.build`)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_head: name must be a non-empty string, got {name!r}")

    def decorator(factory):
        _HEADS[name] = factory
        _HEAD_DOCS[name] = doc or (factory.__doc__ or "").strip().splitlines()[0]
        return factory

    return decorator


def list_heads():
    """Sorted head names."""
    return sorted(_HEADS)


def describe_heads():
    """``{name: first line of its documentation}``."""
    return {name: _HEAD_DOCS[name] for name in list_heads()}


def get_head(name):
    """The factory of ``name`` (``ValueError`` naming the accepted ones)."""
    if not isinstance(name, str) or name not in _HEADS:
        raise ValueError(f"head: unknown name {name!r}; accepted names: {list_heads()}")
    return _HEADS[name]


# ----------------------------------------------------------------------------- presets
@dataclasses.dataclass(frozen=True)
class PresetSpec:
    """One named preset: ``load(**build_overrides)`` -> :class:`keras_mld.ImageClassifier`."""

    name: str
    load: object
    description: str = ""


def register_preset(spec):
    """Adds a :class:`PresetSpec` (a later one of the same name replaces the earlier)."""
    if not isinstance(spec, PresetSpec):
        raise ValueError(f"register_preset: spec must be a PresetSpec, got "
                         f"{type(spec).__name__}")
    _PRESETS[spec.name] = spec
    return spec


def list_presets():
    """Sorted preset names."""
    return sorted(_PRESETS)


def get_preset(name):
    """The :class:`PresetSpec` of ``name``, or None."""
    return _PRESETS.get(name) if isinstance(name, str) else None
