"""Frozen layers and frozen BatchNorm, as the DETR-style backbones of Query2Label train.

Query2Label (Liu et al., arXiv:2107.10834; SlongLiu/query2labels ``lib/models/backbone.py``)
builds its ResNet with ``FrozenBatchNorm2d`` (the pretrained statistics and affine
parameters are fixed buffers: BatchNorm in inference mode, never updated) and trains only
``layer2``-``layer4`` (``BackboneBase``: every other backbone parameter, the stem and
``layer1``, gets ``requires_grad = False``).

:func:`freeze_layers` does the same to a Keras model: layers whose name starts with one
of ``prefixes`` (searched recursively, nested backbones included) and, with
``batchnorm=True``, every ``BatchNormalization`` layer get ``trainable = False``. A Keras
``BatchNormalization`` that is not trainable normalises with its moving statistics in
training too and updates nothing: ``FrozenBatchNorm2d``. Frozen variables are not
trainable, so the optimizer neither updates nor decays them (as a parameter without
``requires_grad`` is not in the official optimizer). Keras' ResNet layer names: the stem
is ``conv1_*`` and ``layer1`` is ``conv2_*``.
"""
import keras

__all__ = ["freeze_layers"]


def _layers(model):
    return list(model._flatten_layers(include_self=False, recursive=True))


def freeze_layers(model, prefixes=(), batchnorm=False):
    """Sets ``trainable = False`` on the layers of ``model`` named ``prefix*`` for a prefix in
    ``prefixes`` and, with ``batchnorm=True``, on every ``BatchNormalization`` layer.

    Must run before ``compile``. A prefix that names no layer is refused (a typo would
    silently train the layers it meant to freeze). Returns the names of the frozen layers.

    Examples:
        >>> import keras
        >>> from keras_mld.training.freeze import freeze_layers
        >>> inp = keras.Input((8, 8, 3))
        >>> h = keras.layers.Conv2D(4, 3, name="conv1_conv")(inp)
        >>> h = keras.layers.BatchNormalization(name="conv1_bn")(h)
        >>> out = keras.layers.Conv2D(4, 3, name="conv3_conv")(h)
        >>> model = keras.Model(inp, out)
        >>> freeze_layers(model, ["conv1_"], batchnorm=True)
        ['conv1_conv', 'conv1_bn']
        >>> [w.path for w in model.trainable_weights]
        ['conv3_conv/kernel', 'conv3_conv/bias']
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"freeze_layers: model must be a keras.Model, got "
                         f"{type(model).__name__}")
    if isinstance(prefixes, str) or not all(isinstance(p, str) and p for p in prefixes):
        raise ValueError(f"freeze_layers: prefixes must be a list of non-empty layer-name "
                         f"prefixes, got {prefixes!r}")
    if not isinstance(batchnorm, bool):
        raise ValueError(f"freeze_layers: batchnorm must be True or False, got {batchnorm!r}")
    layers = _layers(model)
    for prefix in prefixes:
        if not any(layer.name.startswith(prefix) for layer in layers):
            raise ValueError(f"freeze_layers: no layer of the model is named {prefix!r}*")
    frozen = []
    for layer in layers:
        if (any(layer.name.startswith(p) for p in prefixes)
                or (batchnorm and isinstance(layer, keras.layers.BatchNormalization))):
            layer.trainable = False
            frozen.append(layer.name)
    return frozen
