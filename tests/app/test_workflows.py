"""``keras-mld train`` with C-Tran's label-mask training (``data.label_mask`` of the
``ctran_coco`` recipe): the model gets its ``known_labels`` input, the training batches
carry revealed labels (-1 in the targets), validation has every label unknown."""
import keras
import numpy as np
import pytest

from keras_mld.app import workflows
from keras_mld.recipes import load_recipe

pytestmark = pytest.mark.tf_only  # tf.data label masks


def _recipe(label_mask, head="ctran"):
    train = dict(load_recipe("ctran_coco")["train"], epochs=1, lr=1e-3, tensorboard=False)
    return {"name": "t", "model": {"backbone": "small_convnet", "input_size": 64, "head": head,
                                   "head_kwargs": {"embed_dim": 16, "num_heads": 2,
                                                   "ff_dim": 32}},
            "data": {"batch_size": 8, "augment": None, "label_mask": label_mask},
            "train": train}


def test_ctran_label_mask_training_from_a_recipe(tmp_path, monkeypatch):
    """What ``train`` hands to the fit (the fit itself with these inputs:
    tests/models/ctran/test_ctran_end_to_end.py; step for step against the official loop:
    tests/training/test_official_training_q2l_ctran.py)."""
    from keras_mld import data
    from keras_mld.training import distribute

    assert load_recipe("ctran_coco")["data"]["label_mask"] == {"max_known_fraction": 0.75}
    built = data.make_digits_dataset(tmp_path / "d", num_train=16, num_val=8, image_size=64,
                                     seed=3)
    handed = {}

    def fake_fit(make_model, train_ds, val_ds, **kwargs):
        handed.update(model=make_model(), train=train_ds, val=val_ds, **kwargs)
        return handed["model"], "history"

    monkeypatch.setattr(distribute, "distributed_fit", fake_fit)
    assert workflows.train(_recipe({"max_known_fraction": 0.75}), built.train_annotations,
                           str(tmp_path / "run"), val_data=built.val_annotations) == "history"
    model = handed["model"]
    assert sorted(t.name for t in model.inputs) == ["images", "known_labels"]
    inputs, targets = next(iter(handed["train"]))
    known, targets = inputs["known_labels"].numpy(), targets.numpy()
    revealed = known != -1
    assert revealed.any() and (targets[revealed] == -1).all()  # revealed: no target
    assert (targets[~revealed] != -1).all()
    assert np.isfinite(keras.ops.convert_to_numpy(model(inputs))).all()
    val_inputs, val_targets = next(iter(handed["val"]))
    assert (val_inputs["known_labels"].numpy() == -1).all()  # validation: all unknown
    assert (val_targets.numpy() != -1).all()
    # evaluation feeds images alone (every label unknown), as at inference
    images = val_inputs["images"]
    _, scores, _ = workflows.scores_of(model, [(images, val_targets)])
    expected = model.scores(model(val_inputs))
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-6)


def test_label_mask_is_refused_for_other_heads_and_bad_options(tmp_path):
    from keras_mld import data

    built = data.make_digits_dataset(tmp_path / "d", num_train=8, num_val=8, image_size=64,
                                     seed=3)
    with pytest.raises(ValueError, match="label_mask needs the 'ctran' head"):
        workflows.train(_recipe({}, head="gap"), built.train_annotations, str(tmp_path / "r"))
    with pytest.raises(ValueError, match="max_known_fraction"):
        workflows.train(_recipe({"fraction": 0.5}), built.train_annotations,
                        str(tmp_path / "r"))
