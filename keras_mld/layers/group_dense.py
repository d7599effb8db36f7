"""Placeholder: being written."""
import keras


class GroupDense(keras.layers.Layer):
    pass
