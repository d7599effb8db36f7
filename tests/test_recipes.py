"""The packaged recipes (keras_mld/zoo) are data: they load, carry the papers' numbers, and
drive the fit recipe."""
import pytest

from keras_mld.recipes import list_recipes, load_recipe


def test_every_recipe_loads_with_known_sections():
    from keras_mld.training import DEFAULT_RECIPE

    names = list_recipes()
    for expected in ("demo", "mldecoder_coco", "mldecoder_nus_zsl", "mldecoder_openimages",
                     "query2label_coco", "ctran_coco", "aam_coco", "aam_voc", "aam_nus_wide",
                     "aam_vg500"):
        assert expected in names
    for name in names:
        recipe = load_recipe(name)
        unknown = set(recipe["train"]) - set(DEFAULT_RECIPE)
        assert not unknown, (name, unknown)


@pytest.mark.parametrize("name", ["aam_coco", "aam_voc", "aam_nus_wide", "aam_vg500"])
def test_aam_recipes_are_the_released_config(name):
    """deep-object-reid's configs/EfficientNetV2_small_mld.yml (the README trains every
    dataset with it); step by step against the official step:
    tests/training/test_official_aam_training.py."""
    r = load_recipe(name)
    t = r["train"]
    assert t["loss"] == {"name": "aam", "s": 23.0, "m": 0.0, "k": 0.7, "gamma_neg": 0.0,
                         "gamma_pos": 0.0, "eps": 0.0, "reduction": "sum"}
    assert (t["optimizer"], t["lr"], t["weight_decay"], t["nbd"], t["epochs"]) == \
        ("torch_sgd", 0.007, 5e-4, True, 60)
    assert (t["sam_rho"], t["sam_second_pass_state"], t["div_factor"],
            t["final_div_factor"], t["pct_start"], t["cycle_momentum"]) == \
        (0.05, True, 100.0, 1000.0, 0.2, True)
    assert (t["ema_momentum"], t["ema_mode"], t["monitor"]) == \
        (0.9997, "model_state", "val_max_mAP")
    assert t["early_stopping"] == {"patience": 5, "smoothing": 0.8, "rule": "official",
                                   "after_warmup": True}
    assert r["data"]["batch_size"] == 84 and r["model"]["input_size"] == 448


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


def test_query2label_coco_recipe_is_the_official_one():
    r = load_recipe("query2label_coco")
    t = r["train"]
    assert (t["optimizer"], t["lr"], t["weight_decay"], t["decay_all_parameters"],
            t["epochs"], t["epsilon"]) == ("torch_adamw", 1e-4, 1e-2, True, 80, 1e-8)
    assert t["loss"] == {"name": "asl", "gamma_neg": 2.0, "gamma_pos": 0.0, "clip": 0.0,
                         "eps": 1e-5, "stop_focal_gradient": True, "scale": 1000 / 80}
    assert (t["schedule"], t["pct_start"], t["cycle_momentum"], t["ema_momentum"],
            t["ema_mode"], t["monitor"]) == ("onecycle", 0.2, True, 0.9997, "model_state",
                                             "val_max_mAP")
    assert t["early_stopping"] == {"rule": "query2label", "patience": 8}
    assert (t["freeze_layers"], t["freeze_batchnorm"]) == (["conv1_", "conv2_"], True)
    assert (r["model"]["backbone"], r["model"]["head"], r["model"]["input_size"],
            r["data"]["batch_size"]) == ("resnet101", "query2label", 448, 64)
    # step by step against the official loop: tests/training/test_official_training_q2l_ctran.py


def test_ctran_coco_recipe_is_the_official_one():
    r = load_recipe("ctran_coco")
    t = r["train"]
    assert (t["optimizer"], t["lr"], t["weight_decay"], t["epsilon"], t["epochs"],
            t["schedule"], t["ema_momentum"], t["early_stopping"]) == \
        ("torch_adam", 1e-5, 0.0, 1e-8, 100, "constant", None, None)
    assert t["reduce_lr_on_plateau"] == {"monitor": "val_loss", "mode": "min", "factor": 0.1,
                                         "patience": 5}
    assert t["loss"] == {"name": "asl", "gamma_neg": 0.0, "gamma_pos": 0.0, "clip": 0.0,
                         "eps": 0.0, "reduction": "sum"}  # BCE summed over the unknown labels
    assert r["data"]["label_mask"] == {"max_known_fraction": 0.75}
    assert (r["model"]["head"], r["model"]["input_size"], r["data"]["batch_size"]) == \
        ("ctran", 576, 16)


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
