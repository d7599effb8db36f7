"""Shared test fixtures. Backend is chosen by KERAS_BACKEND (tensorflow by default)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import keras  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "tf_only: needs the TensorFlow backend")


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() != "tensorflow":
        skip = pytest.mark.skip(reason="needs the TensorFlow backend")
        for item in items:
            if "tf_only" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield
