"""Placeholder: build / list_models."""


def build(*a, **k):
    raise NotImplementedError


def list_models():
    raise NotImplementedError


def register_head(name):
    raise NotImplementedError
