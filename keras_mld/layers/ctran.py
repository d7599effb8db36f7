"""Placeholder: being written."""
import keras


class CTranHead(keras.layers.Layer):
    pass
