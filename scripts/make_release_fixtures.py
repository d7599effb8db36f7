"""Writes ``.keras`` files and a preset folder with the installed keras-mld release, plus the
logits they give on fixed images, into ``tests/fixtures/release_<version>/``.

``tests/test_saved_files.py`` loads them with the current code (``safe_mode=True``) and
requires the same logits: files users saved with an earlier release keep loading after the
package's modules move. Run it with the release whose files you want to keep readable:

    python scripts/make_release_fixtures.py

Only public API is used, so the script runs with any release since 0.1.0. The models are
tiny (a two-convolution backbone, narrow heads) to keep the fixtures small.
"""
import os
import sys

import keras
import numpy as np

import keras_mld

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_backbone(channels=16):
    x_in = keras.Input(shape=(32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x_in)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(x_in, x, name="tiny_backbone")


def tiny_tresnet():
    return keras_mld.tresnet.tresnet(layers=(1, 1, 1, 1), width_factor=0.0625,
                                     input_shape=(32, 32, 3), name="tiny_tresnet")


def models(names):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(names), 6)).astype("float32")
    graph = np.clip(rng.uniform(size=(len(names), len(names))), 0, 1).astype("float32")
    np.fill_diagonal(graph, 1.0)
    small = {"num_groups": 3, "embed_dim": 16, "num_heads": 2, "ff_dim": 32}
    yield "gap_cosine", dict(head="gap", cosine=True)
    yield "mldecoder", dict(head="mldecoder", **small)
    yield "mldecoder_learnable", dict(head="mldecoder", query_type="learnable", **small)
    yield "mldecoder_word", dict(head="mldecoder", query_type="word", word_dim=6,
                                 label_vectors=vectors, embed_dim=16, num_heads=2, ff_dim=32)
    yield "query2label", dict(head="query2label", hidden_dim=16, num_heads=2, ff_dim=32,
                              keep_input_proj=True, keep_first_self_attn_dec=True)
    yield "ctran", dict(head="ctran", known_labels_input=True, embed_dim=16, num_heads=2,
                        ff_dim=32)
    yield "gat", dict(head="gat", label_vectors=vectors, label_graph=graph, gat_hidden_dim=8,
                      gat_num_heads=2)
    yield "gat_mldecoder", dict(head="gat+mldecoder", label_vectors=vectors, label_graph=graph,
                                gat_hidden_dim=8, gat_num_heads=1, **small)
    yield "mlgcn", dict(head="mlgcn", label_vectors=vectors, label_graph=graph, hidden_dim=8)


def main():
    out = os.path.join(ROOT, "tests", "fixtures", f"release_{keras_mld.__version__}")
    os.makedirs(out, exist_ok=True)
    keras.utils.set_random_seed(0)
    names = ["cat", "dog", "car", "tree", "sky"]
    images = np.random.default_rng(1).integers(0, 256, (2, 40, 36, 3)).astype("uint8")
    known = np.array([[-1, 1, 0, -1, -1], [-1, -1, -1, -1, 1]], "float32")
    expected = {"images": images, "known_labels": known}
    for key, kwargs in models(names):
        model = keras_mld.build(tiny_backbone(), class_names=names, input_shape=(32, 32, 3),
                                **kwargs)
        model.thresholds = {"dog": 0.25}
        feeds = {"images": images, "known_labels": known} if key == "ctran" else images
        expected[key] = np.asarray(model(feeds, training=False))
        model.save(os.path.join(out, f"{key}.keras"))
    # a TResNet backbone (its SpaceToDepth / BlurPool2D layers), compiled with compile()'s
    # defaults (AdamW, ASL, the exact mAP metric), and saved as a preset folder too
    model = keras_mld.build(tiny_tresnet(), head="mldecoder", class_names=names,
                            input_shape=(32, 32, 3), normalization="unit", num_groups=5,
                            embed_dim=16, num_heads=2, ff_dim=32)
    model.compile()
    model.fit(images.astype("float32"), np.eye(5, dtype="float32")[[0, 3]], epochs=1,
              verbose=0)
    expected["tresnet_mldecoder"] = np.asarray(model(images, training=False))
    model.save(os.path.join(out, "tresnet_mldecoder.keras"))
    model.save_to_preset(os.path.join(out, "preset"), overwrite=True,
                         validation={"mAP": 0.5})
    np.savez_compressed(os.path.join(out, "expected.npz"), **expected)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
