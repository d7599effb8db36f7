"""Write ``tests/fixtures/train_ctran_coco.npz``: the OFFICIAL C-Tran training loop run on
a tiny model, for the step-by-step test of the ``ctran_coco`` recipe
(``tests/training/test_official_training_q2l_ctran.py``).

Run with a Python that has torch (CI does not need it: the tests read the fixture)::

    python scripts/make_official_training_fixtures_ctran.py \
        --ctran /path/to/C-Tran --out tests/fixtures

Nothing official is copied into keras-mld; the files are read at run time. The shared
pieces (fixed batches, state dump) are in ``official_training_common.py``.

**C-Tran** (github.com/QData/C-Tran, commit 560cf6f47a7021b9993d63c78f61565840786c24).
``main.py`` itself (its statements, read with ``ast``, imports replaced by the names
below), ``run_epoch.py`` ``run_epoch``, ``models/CTran.py`` ``CTranModel`` (width
``hidden = 16``; the ResNet-101 ``Backbone`` replaced by two conv3x3(stride 2, no
bias)-BatchNorm-ReLU blocks 3 -> 8 -> 16, input 32x32), with the README's flags
``--batch_size 16 --lr 0.00001 --optim adam --layers 3 --dataset coco --use_lmt`` (so
``loss_labels = 'unk'``), ``--dropout 0``, batch 8, ``--epochs 10`` and lr 1e-3 (a
reduction by ReduceLROnPlateau inside 10 epochs). Stand-ins: ``get_data`` returns fixed
batches with fixed label masks (the official loader redraws the masks every epoch; the
test feeds the same fixed masks), the validation set holds the training images with
complemented labels (its loss rises, so the plateau rule reduces the lr);
``evaluate.compute_metrics`` and the loggers record instead of computing metrics.

Stored: ``init/<state key>``, ``first/<key>`` (after the first epoch),
``final/<key>``, the fixed batches (and label masks), ``loss``
and ``lr`` per step and a JSON ``config``.
"""
import argparse
import ast
import json
import math
import os
import sys
import types

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_official_fixtures_q2l_ctran as forward_fixtures  # noqa: E402
from official_source import load_defs  # noqa: E402
from official_training_common import (BATCH, CLASSES, SIZE, STEPS, batches,  # noqa: E402
                                      images, patched, state)

CTRAN_COMMIT = forward_fixtures.CTRAN_COMMIT


def _main_statements(path):
    """``main.py``'s statements without its imports and its ``get_args`` call."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    body = [n for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom))]
    return compile(ast.Module(body=body, type_ignores=[]), path, "exec")


class _Dataset(list):
    epoch = 0


def make_ctran(root, out):
    forward_fixtures.CTRAN["hidden"] = 16
    ctran = forward_fixtures.load_ctran(root)

    class Backbone(nn.Module):  # stands in for the ResNet-101
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(16), nn.ReLU())

        def forward(self, images):
            return self.body(images)

    ctran.Backbone = Backbone
    args = argparse.Namespace(
        dataset="coco", batch_size=BATCH, lr=1e-3, optim="adam", layers=3, heads=4,
        dropout=0.0, pos_emb=False, use_lmt=True, no_x_features=False, num_labels=CLASSES,
        loss_labels="unk", train_known_labels=100, test_known_labels=0, grad_ac_steps=1,
        epochs=10, warmup_scheduler=False, scheduler_type="plateau", scheduler_step=1000,
        scheduler_gamma=0.1, freeze_backbone=False, inference=False, max_samples=-1,
        aux_loss=0.0, model_name="tiny")
    torch.manual_seed(0)
    model = ctran.CTranModel(CLASSES, True, False, 3, 4, 0.0, False)
    init = state(model)

    x, y = batches(1)
    rs = np.random.RandomState(2)
    masks = np.full_like(y, -1.0)  # the official LMT draw: k ~ U{0..0.75 N} revealed labels
    for s in range(STEPS):
        for b in range(BATCH):
            k = rs.randint(0, int(CLASSES * 0.75) + 1)
            known = rs.choice(CLASSES, k, replace=False)
            masks[s, b, known] = y[s, b, known]

    def batch(xb, yb, mb):
        return {"image": images(xb),
                "labels": torch.from_numpy(yb), "mask": torch.from_numpy(mb),
                "imageIDs": [""] * len(xb)}

    train = _Iterable([batch(x[s], y[s], masks[s]) for s in range(STEPS)])
    valid = _Iterable([batch(x[0], 1 - y[0], np.full_like(y[0], -1.0))])
    losses, lrs, states, valid_losses = [], [], {}, []
    real_backward, real_step = torch.Tensor.backward, torch.optim.Adam.step

    def backward(self, *a, **kw):
        losses.append(float(self))
        return real_backward(self, *a, **kw)

    def step(self, *a, **kw):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **kw)

    class LossLogger:
        def __init__(self, name):
            pass

        def log_losses(self, file, epoch, loss, metrics, loss_unk):
            if file == "valid.log":
                valid_losses.append(loss_unk)

    class MetricsLogger:
        def __init__(self, a):
            pass

        def evaluate(self, *a, **kw):
            if "first" not in states:
                states["first"] = state(model)
            states["final"] = state(model)
            return 0, 0

    run_epoch = load_defs(os.path.join(root, "run_epoch.py"), ["run_epoch"],
                          {"torch": torch, "F": torch.nn.functional,
                           "tqdm": lambda data, **kw: data,
                           "custom_replace": sys.modules["models.utils"].custom_replace})
    ns = {"torch": torch, "nn": nn, "np": np, "math": math, "argparse": argparse,
          "get_args": lambda parser: args,
          "get_data": lambda a: (train, valid, None),
          "CTranModel": lambda *a: model, "CTranModelCub": None,
          "evaluate": types.SimpleNamespace(compute_metrics=lambda *a: {}),
          "logger": types.SimpleNamespace(Logger=MetricsLogger, LossLogger=LossLogger),
          "WarmupLinearSchedule": None, "run_epoch": run_epoch["run_epoch"],
          "stop": None, "print": lambda *a, **k: None}
    with patched((torch.Tensor, "cuda", lambda self, *a, **k: self),
                  (nn.Module, "cuda", lambda self, *a, **k: self),
                  (torch.Tensor, "backward", backward), (torch.optim.Adam, "step", step)):
        exec(_main_statements(os.path.join(root, "main.py")), ns)
    assert min(lrs) < max(lrs), "no ReduceLROnPlateau reduction: pick other data"
    config = {"lr": args.lr, "epochs": args.epochs, "steps_per_epoch": STEPS, "batch": BATCH,
              "classes": CLASSES, "size": SIZE, "hidden": 16, "layers": 3, "heads": 4,
              "torch": torch.__version__, "official_commit": CTRAN_COMMIT}
    arrays = {"config": json.dumps(config), "x": x, "y": y, "masks": masks,
              "loss": np.array(losses), "lr": np.array(lrs),
              "valid_loss": np.array(valid_losses)}
    arrays.update({f"init/{k}": v for k, v in init.items()})
    for kind in ("first", "final"):
        arrays.update({f"{kind}/{k}": v.astype(np.float32) for k, v in states[kind].items()})
    path = os.path.join(out, "train_ctran_coco.npz")
    np.savez_compressed(path, **arrays)
    print(path, len(losses), "steps; loss", losses[0], "->", losses[-1], "; lr", lrs,
          "; valid", valid_losses)


class _Iterable(list):
    """A fixed list of batches with what ``run_epoch`` and ``main.py`` read of a loader."""

    def __init__(self, batches):
        super().__init__(batches)
        self.batch_size = BATCH
        self.dataset = _Dataset([0] * sum(len(b["labels"]) for b in batches))



def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ctran", required=True, help="a QData/C-Tran checkout")
    ap.add_argument("--out", default="tests/fixtures")
    a = ap.parse_args()
    torch.set_num_threads(1)
    make_ctran(os.path.abspath(a.ctran), a.out)


if __name__ == "__main__":
    main()
