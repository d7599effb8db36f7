"""Placeholder: being written."""
import keras


class CosineDense(keras.layers.Layer):
    pass
