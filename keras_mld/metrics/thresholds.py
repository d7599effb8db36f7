"""Placeholder."""


def tune_thresholds(*a):
    raise NotImplementedError
