"""keras_mld.export.export_zero_shot_saved_model (ML-Decoder (Ridnik et al., arXiv:2111.12933)
2.3.3; docs/serving.md).

A word-query model is trained one step on 5 "seen" label vectors, exported once, and the
export, loaded in a fresh interpreter where only TensorFlow can be imported
(``tf_only_runner.py``), scores NEW label sets (vectors never seen in training, given as
vectors or as names looked up in the embedded vocabulary) like the Keras model, to 1e-5.
"""
import base64
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mld
from keras_mld.data.image import decode_and_resize
from keras_mld.export import export_zero_shot_saved_model, zero_shot as zs
from keras_mld.export.warmup import read_warmup_requests, warmup_inputs
from tests.export.test_saved_model import run_tf_only_job, test_images
from tests.support.tiny import tiny_backbone

pytestmark = pytest.mark.tf_only

DW = 6
SIZE = (16, 16)
WORDS = ["dog", "Cat", "traffic", "light", "hair", "drier", "Zebra", "bus", "čaj", "new_york"]
# names -> the words they average (looked up as given, then lower-cased)
NAMES = {"dog": ["dog"], "traffic light": ["traffic", "light"], "Hair_Drier": ["hair", "drier"],
         "cat": ["Cat"], "ZEBRA  bus": ["Zebra", "bus"], "čaj": ["čaj"], " bus ": ["bus"]}
SEEN_LABELS = ["s0", "s1", "s2", "s3", "s4"]


def word_matrix():
    return np.random.default_rng(3).normal(size=(len(WORDS), DW)).astype(np.float32)


def name_vectors(names):
    """numpy reference of the vocabulary lookup: mean of the words' rows."""
    mat, row = word_matrix(), {w: i for i, w in enumerate(WORDS)}
    return np.stack([np.mean([mat[row[w]] for w in NAMES[n]], axis=0) for n in names])


def make_model(train=True, **head_kwargs):
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(0)
    seen = rng.normal(size=(5, DW)).astype(np.float32)
    model = keras_mld.build(tiny_backbone(), head="mldecoder", class_names=SEEN_LABELS,
                            input_shape=SIZE + (3,), query_type="word", word_dim=DW,
                            embed_dim=8, num_heads=2, ff_dim=16, random_queries=2,
                            query_noise=0.1, label_vectors=seen, **head_kwargs)
    if not train:
        return model
    images = rng.uniform(0, 255, (2, *SIZE, 3)).astype(np.float32)
    model.compile(optimizer="adam", loss=keras_mld.losses.AsymmetricLoss())
    model.train_on_batch(images, (rng.uniform(size=(2, 5)) > 0.5).astype(np.float32))
    return model


def keras_scores(model, images, vectors):
    """The Keras model on the label set ``vectors`` (set as its state, then restored)."""
    names, saved = model.class_names, model.label_vectors
    model.set_labels([f"label {i}" for i in range(len(vectors))], vectors)
    try:
        logits = model(images, training=False)
    finally:
        model.set_labels(names, saved)
    return tf.sigmoid(tf.cast(logits, tf.float32)).numpy()


CASES = {"full": {}, "group": {"num_groups": 3}}  # group: g = 2, M = 7 pads the last group


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("zsl_exports")
    rng = np.random.default_rng(5)
    blobs = test_images()
    wv = keras_mld.zsl.WordVectors(WORDS, word_matrix())
    names = list(NAMES)
    results, job = {}, {"cases": [], "report": str(root / "report.json")}
    for case_id, head_kwargs in CASES.items():
        model = make_model(train=case_id == "full", **head_kwargs)  # one train step is enough
        vocabulary = wv if case_id == "full" else (WORDS, word_matrix())
        path = export_zero_shot_saved_model(model, root / case_id, vocabulary=vocabulary,
                                            labels=SEEN_LABELS, top_k=3)
        images = rng.uniform(0, 255, (3, *SIZE, 3)).astype(np.float32)
        new_vectors = rng.normal(size=(7, DW)).astype(np.float32)  # never seen in training
        arrays = {"serving_default/images": images, "serving_default/label_vectors": new_vectors,
                  "predict_images/label_vectors": new_vectors[:4]}
        np.savez(root / f"{case_id}-in.npz", **arrays)
        strings = {"predict_images/image_bytes": blobs, "predict_label_names/image_bytes": blobs,
                   "predict_label_names/label_names": [n.encode() for n in names],
                   "label_vectors/label_names": [n.encode() for n in names]}
        job["cases"].append({
            "id": case_id, "export_dir": path, "inputs": str(root / f"{case_id}-in.npz"),
            "outputs": str(root / f"{case_id}-out.npz"),
            "string_inputs": {k: [base64.b64encode(b).decode() for b in v]
                              for k, v in strings.items()}})
        results[case_id] = dict(model=model, path=path, images=images, vectors=new_vectors,
                                blobs=blobs, names=names)
    report = run_tf_only_job(root, job)
    for case in job["cases"]:
        results[case["id"]]["out"] = dict(np.load(case["outputs"], allow_pickle=False))
    return results, report


def test_fresh_tf_only_process(exports):
    _, report = exports
    assert report["errors"] == {} and report["imported_blocked_modules"] == []
    for case_report in report["cases"].values():
        assert set(case_report["signatures"]) == set(zs.BASE_SIGNATURES + zs.VOCABULARY_SIGNATURES)
        assert case_report["unregistered_ops"] == []
        assert not [op for op in case_report["ops"] if ">" in op]
        assert {"LookupTableFindV2", "DecodeImage", "Assert"} <= set(case_report["ops"])
        assert case_report["labels_variable"] == SEEN_LABELS


@pytest.mark.parametrize("case_id", list(CASES))
def test_new_label_sets_score_like_keras(exports, case_id):
    res = exports[0][case_id]
    model, out = res["model"], res["out"]
    # serving_default: images + 7 new label vectors
    np.testing.assert_allclose(out["serving_default/scores"],
                               keras_scores(model, res["images"], res["vectors"]),
                               atol=1e-5, rtol=0)
    # predict_images: encoded images + another label set (4 labels)
    decoded = np.stack([decode_and_resize(b, SIZE).numpy() for b in res["blobs"]])
    ref = keras_scores(model, decoded, res["vectors"][:4])
    np.testing.assert_allclose(out["predict_images/scores"], ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["predict_images/top_k_scores"], -np.sort(-ref)[:, :3],
                               atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out["predict_images/top_k_indices"],
                                  np.argsort(-out["predict_images/scores"], kind="stable")[:, :3])
    # names looked up in the embedded vocabulary (multi-word names averaged)
    vectors = name_vectors(res["names"])
    np.testing.assert_allclose(out["label_vectors/label_vectors"], vectors, atol=1e-6)
    np.testing.assert_allclose(out["predict_label_names/label_vectors"], vectors, atol=1e-6)
    wv = keras_mld.zsl.WordVectors(WORDS, word_matrix())
    np.testing.assert_allclose(vectors, keras_mld.zsl.label_vectors(res["names"], wv), atol=1e-6)
    ref = keras_scores(model, decoded, vectors)
    scores = out["predict_label_names/scores"]
    np.testing.assert_allclose(scores, ref, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out["predict_label_names/top_k_labels"],
                                  np.array(res["names"])[np.argsort(-scores, kind="stable")[:, :3]])
    # metadata
    assert list(out["metadata/labels"]) == SEEN_LABELS and str(out["metadata/task"]) == "multilabel"
    assert int(out["metadata/word_dim"]) == DW and int(out["metadata/vocabulary_size"]) == 10
    np.testing.assert_array_equal(out["metadata/image_size"], SIZE)


@pytest.fixture(scope="module")
def loaded(exports):
    res = exports[0]["full"]
    return tf.saved_model.load(res["path"]), res


@pytest.mark.parametrize("names, words", [
    (["dog", "zebra crossing", "blue_whale"], "crossing | blue | whale"),
    (["new_york"], "new | york"),  # vocabulary entries with "_" cannot be matched
])
def test_unknown_words_raise_invalid_argument(loaded, names, words):
    module, res = loaded
    fn = module.signatures["predict_label_names"]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="words not in the embedded vocabulary") as info:
        fn(image_bytes=tf.constant(res["blobs"][:1]), label_names=tf.constant(names))
    assert words in str(info.value)


def test_name_without_words_raises(loaded):
    module, _ = loaded
    with pytest.raises(tf.errors.InvalidArgumentError, match="names without any word"):
        module.signatures["label_vectors"](label_names=tf.constant(["dog", " _ "]))


def test_warmup_requests_run(loaded):
    module, res = loaded
    logs = read_warmup_requests(res["path"])
    assert sorted(warmup_inputs(log)[0] for log in logs) == [
        "predict_images", "predict_label_names", "serving_default"]
    for log in logs:
        signature, inputs = warmup_inputs(log)
        out = module.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        assert np.all(np.isfinite(out["scores"].numpy()))


def test_without_vocabulary_and_bad_arguments(exports, tmp_path, monkeypatch):
    model = exports[0]["full"]["model"]
    path = export_zero_shot_saved_model(model, tmp_path / "m")
    module = tf.saved_model.load(path)
    assert set(module.signatures) == set(zs.BASE_SIGNATURES)
    assert module.signatures["metadata"]()["vocabulary_size"].numpy() == 0
    # another version, atomic: a crash leaves nothing behind
    monkeypatch.setattr(zs, "_verify_export", lambda *a: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        export_zero_shot_saved_model(model, tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "models.config"]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="word_dim=6"):
        export_zero_shot_saved_model(model, tmp_path / "m", vocabulary=(WORDS, np.zeros((10, 5))))
    plain = keras_mld.build(tiny_backbone(), head="gap", num_classes=3, input_shape=SIZE + (3,))
    with pytest.raises(ValueError, match="label_vectors"):
        export_zero_shot_saved_model(plain, tmp_path / "p")
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "models.config"]


def test_standard_export_after_set_labels_serves_the_new_label_set(tmp_path):
    # a zero-shot classifier switched to 7 labels exports (standard SavedModel) with those 7
    # names and scores equal to the Keras model's on the same label set
    from keras_mld.export import export_saved_model

    model = make_model(train=False)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(7, DW)).astype(np.float32)
    names = [f"new {i}" for i in range(7)]
    model.set_labels(names, vectors)
    path = export_saved_model(model, tmp_path / "m")
    served = tf.saved_model.load(path)
    assert [n.decode() for n in served.signatures["metadata"]()["labels"].numpy()] == names
    images = rng.uniform(0, 255, (3, *SIZE, 3)).astype(np.float32)
    got = served.signatures["serving_default"](images=tf.constant(images))["scores"].numpy()
    np.testing.assert_allclose(got, tf.sigmoid(model(images, training=False)).numpy(),
                               atol=1e-5)
