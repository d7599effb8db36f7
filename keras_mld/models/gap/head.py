"""The ``gap`` head: global average pooling then Dense, the usual baseline."""
from keras_mld.layers.pooling import GlobalPoolHead
from keras_mld.registry import register_head


@register_head("gap")
def gap_head(features, num_classes, inputs, **kwargs):
    """Global average pooling then Dense: the usual baseline head."""
    return GlobalPoolHead(num_classes, name="gap_head", **kwargs)(features)
