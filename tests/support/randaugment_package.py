"""The ``randaugment`` package (1.0.2), the papers' augmentation reference, made importable
on numpy >= 1.24: it builds its magnitude tables with ``np.int``, so its module gets a numpy
proxy that adds ``int`` (numpy itself is left alone)."""
import types

import numpy as np
import pytest


class _NumpyWithInt(types.ModuleType):
    int = int

    def __getattr__(self, name):
        return getattr(np, name)


def load():
    """``randaugment.randaugment`` (skips the test when the package is missing)."""
    package = pytest.importorskip("randaugment.randaugment")
    if not hasattr(package.np, "int"):
        package.np = _NumpyWithInt("numpy")
    return package
