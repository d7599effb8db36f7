"""Placeholder: being written."""
import keras


class MLDecoder(keras.layers.Layer):
    pass
