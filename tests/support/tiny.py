"""A tiny backbone for fast builder/export tests (any keras.Model is a valid backbone)."""
import keras


def tiny_backbone(channels=16, tokens=False, name="tiny_backbone"):
    """Two strided convolutions: [B,H,W,3] -> [B,H/4,W/4,channels] (or tokens [B,HW/16,C])."""
    x_in = keras.Input(shape=(None, None, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x_in)
    x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu")(x)
    if tokens:
        x = keras.layers.Reshape((-1, channels))(x)
    return keras.Model(x_in, x, name=name)


# small head settings so every head is cheap to build and train in tests
SMALL_HEAD_KWARGS = {
    "gap": {},
    "mldecoder": {"num_groups": 3, "embed_dim": 16, "num_heads": 2, "ff_dim": 32},
    "query2label": {"hidden_dim": 16, "num_heads": 2, "ff_dim": 32, "keep_input_proj": True},
    "ctran": {"embed_dim": 16, "num_heads": 2, "ff_dim": 32},
}
