"""Reading checkpoints (:mod:`~keras_mld.checkpoints.reader`) and loading their weights into
Keras layers (:mod:`~keras_mld.checkpoints.loader`): shared by every converter."""
