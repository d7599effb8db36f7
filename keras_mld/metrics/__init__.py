"""Exact multi-label metrics (numpy), a streaming Keras mAP metric, and ZSL helpers.

The metrics of ML-Decoder (Ridnik et al., arXiv:2111.12933) (sections 3-4, ZSL: section 2.3.3).
Labels are 1 / 0, with -1 marking an ignored entry (partial labels);
values are fractions in [0, 1]. See :mod:`keras_mld.metrics.ranking` for the AP definition
and the treatment of classes without positives.
"""
from keras_mld.metrics import zsl  # noqa: F401
from keras_mld.metrics.ranking import (  # noqa: F401
    MeanAveragePrecision, average_precision, mean_average_precision)
from keras_mld.metrics.report import multilabel_report, predict_labels  # noqa: F401
from keras_mld.metrics.thresholds import tune_thresholds  # noqa: F401
from keras_mld.metrics.zsl import precision_recall_f1_at_k, zsl_report  # noqa: F401

__all__ = ["average_precision", "mean_average_precision", "MeanAveragePrecision",
           "multilabel_report", "predict_labels", "tune_thresholds", "zsl",
           "precision_recall_f1_at_k", "zsl_report"]
