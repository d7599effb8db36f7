"""Placeholder: being written."""
import keras


class TransformerDecoderHead(keras.layers.Layer):
    pass
