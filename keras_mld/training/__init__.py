"""Training strategy of Prokofiev & Sovrasov (arXiv:2209.06585) section 3.5 and
ML-Decoder (Ridnik et al., arXiv:2111.12933) appendix C (TensorFlow backend).

SAM (:class:`SAMModel`), OneCycle (:class:`OneCycle`, :class:`OneCycleMomentum`), Adam and
SGD with PyTorch's update rules (:class:`TorchAdam`, :class:`TorchSGD`: coupled L2 or
decoupled decay, per-variable learning-rate factors), an EMA of the whole model state
(:class:`ModelStateEMA`), weight decay without biases and
normalisation variables (:func:`configure_weight_decay`), frozen layers and BatchNorm
(:func:`freeze_layers`), EMA evaluation and the papers' early stopping
(:mod:`keras_mld.training.callbacks`), learning-rate range test
(:func:`lr_range_test`), mixed precision of a recipe (:func:`mixed_precision_scope`) and
the :func:`fit` recipe helper.
"""
from keras_mld.training.callbacks import (  # noqa: F401
    BestModelCheckpoint, EarlyStoppingRule, EMAEarlyStopping, EMAEvaluation, ema_variables,
    swapped_ema_weights)
from keras_mld.training.freeze import freeze_layers  # noqa: F401
from keras_mld.training.fit import DEFAULT_RECIPE, fit, make_loss, make_optimizer  # noqa: F401
from keras_mld.training.precision import (  # noqa: F401
    mixed_precision_scope, resolve_mixed_precision)
from keras_mld.training.lr_finder import lr_range_test  # noqa: F401
from keras_mld.training.plateau import TorchReduceLROnPlateau  # noqa: F401
from keras_mld.training.query2label_stop import (  # noqa: F401
    Query2LabelEarlyStopping, Query2LabelStopRule)
from keras_mld.training.sam import SAMModel, sam_gradients  # noqa: F401
from keras_mld.training.ema import ModelStateEMA  # noqa: F401
from keras_mld.training.schedules import OneCycle, OneCycleMomentum  # noqa: F401
from keras_mld.training.torch_optimizers import TorchAdam, TorchSGD  # noqa: F401
from keras_mld.training.weight_decay import (  # noqa: F401
    configure_weight_decay, is_norm_layer, weight_decay_exclusions)

__all__ = ["SAMModel", "sam_gradients", "OneCycle", "OneCycleMomentum", "TorchAdam",
           "TorchSGD", "ModelStateEMA", "TorchReduceLROnPlateau", "configure_weight_decay",
           "weight_decay_exclusions", "is_norm_layer", "EMAEvaluation", "EMAEarlyStopping",
           "EarlyStoppingRule", "Query2LabelEarlyStopping", "Query2LabelStopRule",
           "freeze_layers", "BestModelCheckpoint", "swapped_ema_weights", "ema_variables",
           "lr_range_test", "fit", "make_loss",
           "make_optimizer", "mixed_precision_scope", "resolve_mixed_precision",
           "DEFAULT_RECIPE"]
