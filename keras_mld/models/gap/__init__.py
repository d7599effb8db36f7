"""GAP: global average pooling then Dense, the baseline head (its layer,
:class:`keras_mld.layers.GlobalPoolHead`, is a shared building block)."""
from keras_mld.models.gap import head  # noqa: F401  (registers "gap")
