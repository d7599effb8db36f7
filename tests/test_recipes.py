"""The packaged recipes (keras_mld/zoo) are data: they load, carry the papers' numbers, and
drive the fit recipe."""
import pytest

from keras_mld.recipes import list_recipes, load_recipe


def test_every_recipe_loads_with_known_sections():
    from keras_mld.training import DEFAULT_RECIPE

    names = list_recipes()
    for expected in ("demo", "mldecoder_coco", "mldecoder_nus_zsl", "mldecoder_openimages",
                     "aam_coco", "aam_voc", "aam_nus_wide", "aam_vg500"):
        assert expected in names
    for name in names:
        recipe = load_recipe(name)
        unknown = set(recipe["train"]) - set(DEFAULT_RECIPE)
        assert not unknown, (name, unknown)


@pytest.mark.parametrize("name, s, gneg, gpos, lr", [
    ("aam_coco", 23, 1, 0, 0.007), ("aam_voc", 17, 2, 1, 0.005),
    ("aam_nus_wide", 23, 2, 1, 0.009), ("aam_vg500", 25, 1, 0, 0.005)])
def test_aam_recipes_match_the_papers_settings(name, s, gneg, gpos, lr):
    r = load_recipe(name)
    loss = r["train"]["loss"]
    assert (loss["name"], loss["s"], loss["gamma_neg"], loss["gamma_pos"], loss["m"], loss["k"]) \
        == ("aam", s, gneg, gpos, 0.0, 0.7)
    assert r["train"]["lr"] == lr and r["train"]["sam_rho"] == 0.05
    assert r["train"]["ema_momentum"] == 0.9997 and r["train"]["schedule"] == "onecycle"


def test_mldecoder_coco_recipe_is_the_official_one():
    r = load_recipe("mldecoder_coco")
    t = r["train"]
    assert (t["optimizer"], t["lr"], t["weight_decay"], t["epochs"]) == \
        ("torch_adam", 1e-4, 1e-4, 40)  # coupled L2 (torch.optim.Adam)
    assert t["loss"] == {"name": "asl", "gamma_neg": 4.0, "gamma_pos": 0.0, "clip": 0.05,
                         "stop_focal_gradient": True, "reduction": "sum"}
    assert (t["ema_mode"], t["cycle_momentum"], t["epsilon"], t["early_stopping"],
            t["monitor"]) == ("model_state", True, 1e-8, None, "val_max_mAP")
    # step by step against the official loop: tests/training/test_official_training.py
    assert r["data"]["batch_size"] == 56 and r["model"]["input_size"] == 448


def test_unknown_recipe_and_bad_sections(tmp_path):
    with pytest.raises(ValueError, match="recipe"):
        load_recipe("no_such_recipe")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {}\noptimiser: {}\n")
    with pytest.raises(ValueError, match="optimiser"):
        load_recipe(str(bad))


def test_model_arguments_is_the_one_recipe_to_build_mapping():
    from keras_mld.recipes import load_recipe, model_arguments

    coco = load_recipe("mldecoder_coco")
    args = model_arguments(coco)
    m = coco["model"]
    assert args == {"backbone": m["backbone"], "head": "mldecoder",
                    "input_shape": (m["input_size"], m["input_size"], 3),
                    "weights": m["weights"], **m["head_kwargs"]}
    # overrides win, None included (weights=None offline)
    assert model_arguments(coco, weights=None, num_classes=3)["weights"] is None
    # another head: the recipe head's options do not follow it
    assert model_arguments(coco, head="gap") == {
        "backbone": m["backbone"], "head": "gap", "input_shape": args["input_shape"],
        "weights": m["weights"]}
    demo = load_recipe("demo")
    assert model_arguments(demo, head="mldecoder")["num_groups"] == \
        demo["model"]["heads"]["mldecoder"]["num_groups"]
    with pytest.raises(ValueError, match="pick one with head="):
        model_arguments(demo)


@pytest.mark.parametrize("text, why", [
    (b"model: [unclosed", "not valid YAML.*ParserError"),
    (b"model: {a: 1\n  b: [", "not valid YAML"),
    (b"model: !!python/object:os.system {}", "not valid YAML.*ConstructorError"),
    (b"a: \x07bell", "not valid YAML.*ReaderError"),
    (b"model: @x", "not valid YAML.*ScannerError"),
    (b"[" * 10_000, "not valid YAML.*RecursionError"),
    (b"model: " + b"[" * 80 + b"]" * 80, "nested more than 64"),
    (b"model: caf\xe9", "as UTF-8"),
    (b"1: {}\n2: {}", "unknown sections"),
])
def test_malformed_recipe_files_are_value_errors_naming_the_file(tmp_path, text, why):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text)
    with pytest.raises(ValueError, match=f"recipe: .*bad.yaml.*{why}"):
        load_recipe(str(path))


def test_oversized_recipe_files_are_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"  # PyYAML would spend seconds on it
    path.write_text("model: {}\n# " + "x" * 70_000 + "\n")
    with pytest.raises(ValueError, match=r"recipe: .*big.yaml' has 70\d+ bytes, more than"):
        load_recipe(str(path))


def test_mldecoder_nus_zsl_recipe_is_the_official_zero_shot_loop(tmp_path, monkeypatch):
    """train_zsl_nus.py: the MS-COCO loop with coupled L2 1e-2 and word queries; the recipe
    builds the zero-shot model from word vectors of the class names (a label is the mean of
    its words' vectors) and `keras-mld train` refuses to train word queries without them."""
    import keras
    import numpy as np

    from keras_mld.app import workflows
    from keras_mld.layers import ZSLMLDecoder
    from keras_mld.models.builder import build_from_recipe
    from tests.support.tiny import tiny_backbone

    r = load_recipe("mldecoder_nus_zsl")
    t, coco = r["train"], load_recipe("mldecoder_coco")["train"]
    assert (t["optimizer"], t["lr"], t["weight_decay"], t["epochs"]) == \
        ("torch_adam", 1e-4, 1e-2, 40)  # add_weight_decay(model, 1e-2): coupled L2
    assert {k: v for k, v in t.items() if k != "weight_decay"} == \
        {k: v for k, v in coco.items() if k != "weight_decay"}
    assert r["model"]["head_kwargs"]["query_type"] == "word" and r["model"]["input_size"] == 224

    rs = np.random.default_rng(0)
    words = {w: rs.normal(size=6).round(3) for w in ("sky", "water", "street", "sign")}
    glove = tmp_path / "glove.txt"
    glove.write_text("".join(w + " " + " ".join(map(str, v)) + "\n" for w, v in words.items()))
    names = ["sky", "water", "street_sign"]
    model = build_from_recipe(r, class_names=names, word_vectors=str(glove),
                              backbone=tiny_backbone(), weights=None, input_shape=(32, 32, 3),
                              embed_dim=16, num_heads=2, ff_dim=32)
    head = model.get_layer("ml_decoder")
    assert isinstance(head, ZSLMLDecoder) and head.group_size == 1 and head.word_dim == 6
    expected = np.stack([words["sky"], words["water"], (words["street"] + words["sign"]) / 2])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(head.label_set)[:3], expected,
                               rtol=1e-6)
    assert model.output_shape == (None, 3)

    class Source:
        class_names, task = names, "multilabel"
    monkeypatch.setattr(workflows, "load_source", lambda path, class_names=None: Source())
    with pytest.raises(ValueError, match="word_vectors: .*--word-vectors"):
        workflows.train("mldecoder_nus_zsl", "data.json", str(tmp_path / "run"))


def test_mldecoder_openimages_recipe_follows_the_released_model_and_the_coco_loop():
    """No Open Images trainer is released: the released model's settings (TResNet-M, 224,
    200 groups) and train.py's loop with the epochs and loss asymmetry of the paper."""
    r = load_recipe("mldecoder_openimages")
    m, t, coco = r["model"], r["train"], load_recipe("mldecoder_coco")["train"]
    assert (m["backbone"], m["input_size"], m["head_kwargs"]["num_groups"]) == \
        ("tresnet_m", 224, 200)
    same = ("optimizer", "lr", "weight_decay", "epsilon", "schedule", "pct_start",
            "cycle_momentum", "ema_momentum", "ema_mode", "monitor", "early_stopping")
    assert {k: t[k] for k in same} == {k: coco[k] for k in same}
    assert t["loss"]["gamma_neg"] > coco["loss"]["gamma_neg"]
    assert "no Open Images" in r["source"] or "no Open Images trainer" in r["source"]
