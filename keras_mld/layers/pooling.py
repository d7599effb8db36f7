"""Placeholder: being written."""
import keras


class GlobalPoolHead(keras.layers.Layer):
    pass
