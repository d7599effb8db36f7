"""Placeholder."""


def average_precision(*a):
    raise NotImplementedError


mean_average_precision = multilabel_report = MeanAveragePrecision = average_precision
