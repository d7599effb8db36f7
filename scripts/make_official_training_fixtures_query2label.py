"""Write ``tests/fixtures/train_query2label_coco.npz``: the OFFICIAL Query2Label training
loop run on a tiny model, for the step-by-step test of the ``query2label_coco`` recipe
(``tests/training/test_official_training_q2l_ctran.py``).

Run with a Python that has torch (CI does not need it: the tests read the fixture)::

    python scripts/make_official_training_fixtures_query2label.py \
        --q2l /path/to/query2labels --out tests/fixtures

Nothing official is copied into keras-mld; the files are read at run time. The shared
pieces (fixed batches, state dump) are in ``official_training_common.py``.

**Query2Label** (github.com/SlongLiu/query2labels, commit
55eb05064f4badbe03423b79e5c9d143da2dff2e). ``main_mlc.py``: the functions ``main_worker``
and ``train`` themselves (read with ``ast`` and executed, with the README's flags:
``--optim AdamW --lr 1e-4 --weight-decay 1e-2 --gamma_pos 0 --gamma_neg 2 --dtgfl
--early-stop``, defaults otherwise: ``--eps 1e-5 --loss_clip 0 --ema-decay 0.9997
--ema-epoch 0``), its ``ModelEma``, ``AverageMeter``/``ProgressMeter``; the model from
``lib/models/query2label.py`` ``build_q2l`` with ``lib/models/transformer.py``, the
``Joiner``, ``BackboneBase`` (freezing rule: only ``layer2``-``layer4`` train) and
``FrozenBatchNorm2d`` of ``lib/models/backbone.py`` (``ast``), ``PositionEmbeddingSine``;
``lib/models/aslloss.py`` ``AsymmetricLossOptimized``. Stand-ins: the ResNet-101 is a tiny
ResNet-shaped network (``conv1``/``bn1`` stem 3 -> 8, ``layer1`` 8 -> 8, ``layer2``
8 -> 16, conv3x3 + FrozenBatchNorm2d + ReLU each, input 32x32, map 8x8) whose
"pretrained" BatchNorm buffers are the statistics of the first batch (random affine);
torchvision's ``IntermediateLayerGetter`` is a loop over
the children up to ``layer2``; ``DistributedDataParallel`` is a wrapper holding
``.module``; the data loaders are ``STEPS`` fixed batches; ``validate`` records the
regular and EMA states and returns scripted mAPs; ``dist`` is a one-process stub;
``Tensor.cuda`` is the identity; ``args.arch`` (read by the official checkpoint dict but
not defined by its parser) is set. Overrides: ``--lr 1e-3`` and ``--ema-decay`` (0.9997
averages nothing visible in 24 steps), ``--epochs``, ``--dropout 0``, tiny widths.
Early stopping: ``main_worker`` is also run with scripted (regular, EMA) mAP sequences
and the epoch where the official loop breaks is stored.

Stored: ``init/<state key>``, ``first/<key>`` (after the first epoch),
``final/<key>``, ``first_ema/``, ``ema/`` (the EMA states), the fixed batches, the
scripted early-stop sequences and where the official loop stopped, ``loss``
and ``lr`` per step and a JSON ``config``.
"""
import argparse
import contextlib
import copy
import json
import math
import os
import sys
import tempfile
import time
import types
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_official_fixtures_q2l_ctran as forward_fixtures  # noqa: E402
from official_source import load_defs  # noqa: E402
from official_training_common import (BATCH, CLASSES, SIZE, STEPS, batches,  # noqa: E402
                                      images, patched, state)

Q2L_COMMIT = forward_fixtures.Q2L_COMMIT


class IntermediateLayerGetter(nn.ModuleDict):
    """Stand-in for torchvision's: the children up to the last returned one, in order."""

    def __init__(self, model, return_layers):
        layers, wanted = OrderedDict(), dict(return_layers)
        for name, child in model.named_children():
            layers[name] = child
            wanted.pop(name, None)
            if not wanted:
                break
        super().__init__(layers)
        self.return_layers = dict(return_layers)

    def forward(self, x):
        out = OrderedDict()
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


class DDP(nn.Module):
    """Stand-in for DistributedDataParallel (one process): holds ``.module``."""

    def __init__(self, module, device_ids=None, broadcast_buffers=False):
        super().__init__()
        self.module = module

    def forward(self, *a, **kw):
        return self.module(*a, **kw)


def _q2l_model(root, q2l, args, calibration):
    bb = load_defs(os.path.join(root, "lib/models/backbone.py"),
                   ["FrozenBatchNorm2d", "BackboneBase", "Joiner"],
                   {"torch": torch, "nn": nn, "Tensor": torch.Tensor, "Dict": dict,
                    "List": list, "IntermediateLayerGetter": IntermediateLayerGetter})
    frozen_bn = bb["FrozenBatchNorm2d"]

    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                             frozen_bn(cout), nn.ReLU())

    class TinyResNet(nn.Module):  # the names of torchvision's ResNet
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
            self.bn1 = frozen_bn(8)
            self.relu = nn.ReLU()
            self.layer1 = block(8, 8, 1)
            self.layer2 = block(8, 16, 2)

    pe = sys.modules["models.position_encoding"]

    def build_backbone(a):
        net = TinyResNet()
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():  # "pretrained" frozen BatchNorm: the statistics of the data
            h = calibration
            for conv, bn in ((net.conv1, net.bn1), (net.layer1[0], net.layer1[1]),
                             (net.layer2[0], net.layer2[1])):
                h = conv(h)
                bn.running_mean.copy_(h.mean((0, 2, 3)))
                bn.running_var.copy_(h.var((0, 2, 3)))
                bn.weight.copy_(1 + 0.2 * torch.randn(bn.weight.shape, generator=gen))
                bn.bias.copy_(0.2 * torch.randn(bn.bias.shape, generator=gen))
                h = torch.relu(bn(h))
        base = bb["BackboneBase"](net, True, 16, {"layer2": "0"})  # official freezing
        joiner = bb["Joiner"](base, pe.PositionEmbeddingSine(a.hidden_dim // 2, normalize=True,
                                                             maxH=8, maxW=8), a)
        joiner.num_channels = 16
        return joiner

    q2l.build_backbone = build_backbone
    torch.manual_seed(0)
    return q2l.build_q2l(args)


def q2l_args(**over):
    a = dict(hidden_dim=16, nheads=4, dim_feedforward=32, enc_layers=1, dec_layers=2,
             dropout=0.0, pre_norm=False, keep_input_proj=False, keep_first_self_attn_dec=False,
             keep_other_self_attn_dec=False, num_class=CLASSES, backbone="resnet101",
             # README: --gamma_pos 0 --gamma_neg 2 --dtgfl --lr 1e-4 --optim AdamW
             # --weight-decay 1e-2 --early-stop (--amp: off on a CPU); defaults otherwise
             optim="AdamW", eps=1e-5, dtgfl=True, gamma_pos=0.0, gamma_neg=2.0, loss_dev=-1.0,
             loss_clip=0.0, epochs=12, val_interval=1, start_epoch=0, batch_size=BATCH,
             lr=1e-3, weight_decay=1e-2, resume="", resume_omit=[], evaluate=False,
             ema_decay=0.9, ema_epoch=0, print_freq=10 ** 6, amp=False, early_stop=True,
             kill_stop=False, output=".", workers=0, arch="resnet101",
             local_rank=0, rank=0, world_size=1)  # set by the official main()
    a.update(over)
    return argparse.Namespace(**a)


def run_q2l(root, model_factory, args, loader, maps, record):
    """Runs the official ``main_worker``; ``maps``: [(regular, ema)] per epoch."""
    losses, lrs, betas, states = record["loss"], record["lr"], record["beta1"], record["states"]
    aslloss = types.ModuleType("models.aslloss")
    real = sys.modules["models.aslloss"].AsymmetricLossOptimized

    class Recording(real):
        def forward(self, x, y):
            loss = super().forward(x, y)
            losses.append(float(loss))
            return loss

    aslloss.AsymmetricLossOptimized = Recording
    calls = []

    def validate(val_loader, m, criterion, a, logger):
        epoch = len(calls) // 2
        kind = "regular" if len(calls) % 2 == 0 else "ema"
        calls.append(kind)
        if kind == "regular":
            if "first" not in states:
                states["first"] = state(m)
            states["final"] = state(m)
        else:
            if "first_ema" not in states:
                states["first_ema"] = state(m)
            states["ema"] = state(m)
        return 0.5, float(maps[epoch][0 if kind == "regular" else 1])

    quiet = types.SimpleNamespace(info=lambda *a, **k: None)
    dist = types.SimpleNamespace(get_rank=lambda: 0, get_world_size=lambda: 1,
                                 barrier=lambda: None)
    ns = {"torch": torch, "nn": nn, "math": math, "os": os, "sys": sys, "time": time,
          "np": np, "datetime": __import__("datetime"), "deepcopy": copy.deepcopy,
          "lr_scheduler": torch.optim.lr_scheduler, "dist": dist,
          "models": types.SimpleNamespace(aslloss=aslloss), "build_q2l": model_factory,
          "get_datasets": lambda a: (loader, loader), "validate": validate,
          "save_checkpoint": lambda *a, **k: None,
          "SummaryWriter": lambda **k: types.SimpleNamespace(add_scalar=lambda *a: None,
                                                             close=lambda: None),
          "best_mAP": 0, "List": list}
    load_defs(os.path.join(root, "main_mlc.py"),
              ["main_worker", "train", "ModelEma", "add_weight_decay", "AverageMeter",
               "AverageMeterHMS", "ProgressMeter", "kill_process"], ns)
    real_step = torch.optim.AdamW.step

    def step(self, *a, **kw):  # records the lr and beta1 each update uses
        lrs.append(self.param_groups[0]["lr"])
        betas.append(self.param_groups[0]["betas"][0])
        return real_step(self, *a, **kw)

    class Sampler:
        def __init__(self, ds, shuffle=True):
            pass

        def set_epoch(self, epoch):
            pass

    with patched((torch.Tensor, "cuda", lambda self, *a, **k: self),
                  (nn.Module, "cuda", lambda self, *a, **k: self),
                  (torch.cuda, "max_memory_allocated", lambda *a: 0),
                  (torch.cuda, "empty_cache", lambda: None),
                  (torch.nn.parallel, "DistributedDataParallel", DDP),
                  (torch.utils.data.distributed, "DistributedSampler", Sampler),
                  (torch.utils.data, "DataLoader", lambda ds, **kw: ds),
                  (torch.optim.AdamW, "step", step)), \
            tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        ns["main_worker"](args, quiet)
    return len(calls) // 2


def make_q2l(root, out):
    q2l = forward_fixtures.load_q2l(root)
    sys.modules["models.aslloss"] = __import__("importlib").import_module("models.aslloss")
    args = q2l_args()
    x, y = batches(0)
    loader = [(images(xb), torch.from_numpy(yb)) for xb, yb in zip(x, y)]
    model = _q2l_model(root, q2l, args, loader[0][0])
    init = state(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    record = {"loss": [], "lr": [], "beta1": [], "states": {}}
    rising = [(0.1 + 0.01 * e, 0.1 + 0.01 * e + 0.005) for e in range(args.epochs)]
    epochs = run_q2l(root, lambda a: model, args, loader, rising, record)
    assert epochs == args.epochs, epochs

    # the early-stopping rule: scripted mAP sequences, the epoch where the loop breaks
    rs = np.random.RandomState(5)
    sequences, stops = [], []
    for k in range(6):
        n = 30
        trend = np.minimum(np.arange(n), 4 + 3 * k) * 0.02
        reg = 0.3 + trend + 0.03 * rs.rand(n)
        ema = reg + 0.02 * (rs.rand(n) - 0.3 - 0.1 * k)
        if k == 5:  # the EMA stays at its best: the official rule never stops
            ema = np.minimum(np.maximum.accumulate(reg) + 0.01, 0.3 + 0.12)
        sequences.append(np.stack([reg, ema], 1))
        small = _q2l_model(root, q2l, args, loader[0][0])
        stops.append(run_q2l(root, lambda a, m=small: m, q2l_args(epochs=n), loader[:1],
                             sequences[-1], {"loss": [], "lr": [], "beta1": [],
                                             "states": {}}))
    config = {"lr": args.lr, "ema_decay": args.ema_decay, "epochs": args.epochs,
              "steps_per_epoch": STEPS, "batch": BATCH, "classes": CLASSES, "size": SIZE,
              "hidden_dim": 16, "num_heads": 4, "ff_dim": 32, "weight_decay": 1e-2,
              "trainable": len(trainable), "torch": torch.__version__,
              "official_commit": Q2L_COMMIT}
    arrays = {"config": json.dumps(config), "x": x, "y": y,
              "loss": np.array(record["loss"]), "lr": np.array(record["lr"]),
              "beta1": np.array(record["beta1"]), "stop_maps": np.array(sequences),
              "stop_epochs": np.array(stops)}
    arrays.update({f"init/{k}": v for k, v in init.items()})
    for kind in ("first", "first_ema", "final", "ema"):
        arrays.update({f"{kind}/{k}": v.astype(np.float32)
                       for k, v in record["states"][kind].items()})
    path = os.path.join(out, "train_query2label_coco.npz")
    np.savez_compressed(path, **arrays)
    print(path, len(record["loss"]), "steps; loss", record["loss"][0], "->",
          record["loss"][-1], "; stops", stops)



def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--q2l", required=True, help="a SlongLiu/query2labels checkout")
    ap.add_argument("--out", default="tests/fixtures")
    a = ap.parse_args()
    torch.set_num_threads(1)
    make_q2l(os.path.abspath(a.q2l), a.out)


if __name__ == "__main__":
    main()
