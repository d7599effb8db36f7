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


# small Keras models for the export tests: pixels [B,H,W,3] -> logits [B, N]
NUM_EXPORT_CLASSES = 5
EXPORT_LABELS = ["person", "bicycle", "traffic light", "čaj", "dog"]
N = NUM_EXPORT_CLASSES


def export_features(inputs, normalise=True):
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs) if normalise else inputs
    x = keras.layers.Conv2D(6, 3, strides=2, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.GlobalAveragePooling2D()(x)


def tiny_classifier(logits_name, shape=(32, 32, 3)):
    def make():
        images = keras.Input(shape, name="images")
        x = keras.layers.Dropout(0.3)(export_features(images))
        logits = keras.layers.Dense(N)(x)
        if logits_name:
            logits = keras.layers.Identity(name=logits_name)(logits)
        return keras.Model(images, logits)
    return make
