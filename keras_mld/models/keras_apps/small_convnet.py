"""``small_convnet``: the embedded demo's from-scratch CNN, as a backbone."""
import keras

from keras_mld.registry import BackboneSpec, register_backbone


def small_convnet(include_top=False, input_shape=(64, 64, 3), weights=None,
                  widths=(24, 32, 64, 128), depths=(1, 1, 2, 2)):
    """A small VGG-style CNN for small images: a stride-2 stem, then conv-BN-ReLU stages
    separated by max-pooling; output stride 8 (64x64 in -> 8x8x128 features, ~36 MMACs).

    Trains from scratch in minutes on a CPU: the embedded demo's backbone. It has no
    pretrained weights (``weights="imagenet"`` is refused).
    """
    if weights == "imagenet":
        raise ValueError("weights: small_convnet has no ImageNet weights; use None or a path")
    del include_top  # never has a classifier
    x_in = keras.Input(shape=input_shape)
    x = x_in
    for stage, (width, depth) in enumerate(zip(widths, depths)):
        if stage > 1:
            x = keras.layers.MaxPooling2D(name=f"stage{stage}_pool")(x)
        for conv in range(depth):
            stride = 2 if stage == 0 else 1
            x = keras.layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False,
                                    name=f"stage{stage}_conv{conv}")(x)
            x = keras.layers.BatchNormalization(name=f"stage{stage}_bn{conv}")(x)
            x = keras.layers.ReLU(name=f"stage{stage}_relu{conv}")(x)
    return keras.Model(x_in, x, name="small_convnet")


register_backbone(BackboneSpec("small_convnet",
                               lambda input_shape, weights: small_convnet(input_shape=input_shape),
                               "unit", min_size=8))
