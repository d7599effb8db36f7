"""Exact multi-label metrics (numpy) and a streaming Keras mAP metric."""
from keras_mld.metrics.ranking import (  # noqa: F401
    MeanAveragePrecision, average_precision, mean_average_precision, multilabel_report)
from keras_mld.metrics.thresholds import tune_thresholds  # noqa: F401
