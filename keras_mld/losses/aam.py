"""Placeholder."""
import keras


class AAMLoss(keras.losses.Loss):
    pass
