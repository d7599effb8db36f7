"""Placeholder."""
import keras


class AsymmetricLoss(keras.losses.Loss):
    pass


class AsymmetricLossSingleLabel(keras.losses.Loss):
    pass
