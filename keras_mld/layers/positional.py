"""Placeholder: being written."""
import keras


class SinePositionalEncoding2D(keras.layers.Layer):
    pass
