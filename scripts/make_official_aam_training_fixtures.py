"""Write ``tests/fixtures/train_aam_coco.npz``: the OFFICIAL deep-object-reid training step
(Prokofiev & Sovrasov, "Combining Metric Learning and Attention Heads For Accurate and
Efficient Multilabel Image Classification", arXiv:2209.06585) run on a tiny model, for the
step-by-step test of the ``aam_*`` recipes (``tests/training/test_official_aam_training.py``).

Run with a Python that has torch (CI does not need it: the test reads the fixture)::

    python scripts/make_official_aam_training_fixtures.py --official /path/to/deep-object-reid \\
        --out tests/fixtures

``--official`` is a checkout of https://github.com/openvinotoolkit/deep-object-reid, branch
``multilabel`` (fixture made at commit c92f63d802a03a873f2706462bdd2d5cf8a22de4, the last
commit of the authors on that branch, read from the fork ``tosfaq/deep-object-reid``, which
holds it; that fork's 19 later commits change only augmentation switches, image loading and
worker counts). Read from it at run time with ``ast`` (nothing is
copied into keras-mld):

* ``configs/EfficientNetV2_small_mld.yml``: the released COCO config (lr 0.007, ``sam`` rho
  0.05 over ``sgd``, ``nbd``, weight decay 5e-4, ``onecycle`` pct_start 0.2 with
  ``lr_decay_factor`` 1000, 60 epochs, ``am_binary`` s 23 m 0 k 0.7 with ASL gammas 0, EMA
  0.9997, ``train_patience`` 5); the values below are read from it;
* ``torchreid/optim/optimizer.py``: ``build_optimizer`` / ``_build_optim`` (the ``nbd``
  parameter groups: ``.bias`` 2x lr no decay, 1-D and norm weights no decay; SGD momentum
  0.9, dampening 0; SAM over it);
* ``torchreid/optim/sam.py``: ``SAM`` (``first_step`` / ``second_step``);
* ``torchreid/optim/lr_scheduler.py``: ``build_lr_scheduler`` / ``_build_scheduler`` and
  its ``OneCycleLR`` (``div_factor=100``, ``final_div_factor=lr_decay_factor``, momentum
  cycling on: torch's default) with ``warmup_finished``;
* ``torchreid/losses/asl.py``: ``AMBinaryLoss`` (summed over batch and classes);
* ``torchreid/losses/am_softmax.py``: ``AngleSimpleLinear``, the cosine classifier (the
  tiny model's head; keras-mld's ``CosineDense``);
* ``torchreid/engine/image/multilabel.py``: ``MultilabelEngine.forward_backward``,
  ``_forward_model``, ``_single_model_losses`` (the train step itself: SAM's two forward
  passes in training mode, ``first_step``, ``second_step``, with the engine's
  ``GradScaler`` disabled as on a CPU) and ``exit_on_plateau_and_choose_best`` /
  ``ema_smooth`` (the early stopping);
* ``torchreid/utils/torchtools.py``: ``ModelEmaV2``.

Stand-ins, and what they change: ``Engine.train``'s per-batch order is written out here
(``forward_backward``; ``warmup_finished`` read; ``ema_model.update``; scheduler step:
the lines of ``engine.py``'s ``train``); the data loader is ``STEPS_PER_EPOCH`` fixed
batches; ``get_model_attr`` is ``getattr`` and NNCF's compression parameters are absent;
``accuracy_multilabel`` returns 0; the EMA decay is ``EMA_DECAY`` (0.9997 averages
nothing visible in 120 steps); mixed precision is off (a CPU). The model: two
conv3x3(stride 2, padding 1, no bias)-BatchNorm-ReLU blocks (3 -> 8 -> 16 channels), a
global average pool and the official ``AngleSimpleLinear(16, 10)``, input 32x32; it has
the ``get_config_optim`` of the official ``ModelInterface`` (one group, all parameters).

Early stopping: the official ``exit_on_plateau_and_choose_best`` is fed the fixed score
sequence ``SCORES`` with the official scheduler's ``warmup_finished`` after each epoch of
this run; the epoch where it says stop is stored.

Stored: ``init/<state key>``, ``first/<key>``, ``first_ema/<key>`` (after the first epoch),
``final/<key>``, ``ema/<key>`` (after the last step), ``x`` [S, B, H, W, 3] NHWC and ``y``
[S, B, N], ``loss`` [steps] (first pass, at w), ``loss_second`` [steps] (second pass, at
w + e), ``lr`` / ``lr_bias`` / ``momentum`` [steps] (what each update used),
``warmup_finished`` [epochs], ``scores`` and ``stop_epoch``, and a JSON ``config``.
"""
import argparse
import ast
import json
import math
import os
import types
import warnings

import numpy as np
import torch
import yaml

from official_source import load_defs, load_methods, parse

EMA_DECAY, STEPS_PER_EPOCH, BATCH, CLASSES, SIZE = 0.9, 2, 8, 10, 32
CONFIG = "configs/EfficientNetV2_small_mld.yml"
# validation scores for the early-stopping comparison: a drop during the warm-up (which
# would stop a rule that counts from the start), a rise, then a plateau
SCORES = [0.30, 0.29, 0.28, 0.27, 0.26, 0.25, 0.24, 0.23, 0.22, 0.50, 0.60, 0.65, 0.66,
          0.655, 0.66, 0.64, 0.62, 0.62, 0.61, 0.60, 0.60, 0.59]


class Tiny(torch.nn.Module):
    def __init__(self, head):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
            torch.nn.BatchNorm2d(16), torch.nn.ReLU())
        self.head = head

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))

    def get_config_optim(self, lrs):  # the official ModelInterface's (one group)
        return [{"params": self.named_parameters(), "lr": lrs}]


def _state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official", required=True,
                    help="a deep-object-reid checkout, branch multilabel")
    ap.add_argument("--commit", default="c92f63d802a03a873f2706462bdd2d5cf8a22de4")
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    root = os.path.abspath(args.official)

    def path(rel):
        return os.path.join(root, rel)

    with open(path(CONFIG), encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    tr, loss_cfg = cfg["train"], cfg["loss"]
    assert tr["optim"] == "sam" and tr["nbd"] and tr["lr_scheduler"] == "onecycle"
    lr, wd, epochs = float(tr["lr"]), float(tr["weight_decay"]), int(tr["max_epoch"])
    pct_start, decay_factor = float(tr["pct_start"]), float(tr["lr_decay_factor"])
    rho, patience = float(tr["sam"]["rho"]), int(tr["train_patience"])
    s, m = float(loss_cfg["softmax"]["s"]), float(loss_cfg["softmax"]["m"])
    k = float(loss_cfg["am_binary"]["amb_k"])
    gamma_neg, gamma_pos = float(loss_cfg["asl"]["gamma_neg"]), float(loss_cfg["asl"]["gamma_pos"])

    from torch import nn
    from torch.optim.lr_scheduler import _LRScheduler
    ns = {"torch": torch, "nn": nn, "warnings": warnings, "math": math,
          "optim": torch.optim, "_LRScheduler": _LRScheduler,
          "Parameter": torch.nn.Parameter, "F": torch.nn.functional,
          "deepcopy": __import__("copy").deepcopy, "np": np}
    load_defs(path("torchreid/optim/sam.py"), ["SAM"], ns)
    ns.update(RAdam=None, get_compression_parameter=lambda: None,
              get_model_attr=lambda model, attr: getattr(model, attr))
    load_defs(path("torchreid/optim/optimizer.py"),
              ["AVAI_OPTIMS", "build_optimizer", "_build_optim"], ns)
    load_defs(path("torchreid/optim/lr_scheduler.py"),
              ["AVAI_SCH", "build_lr_scheduler", "_build_scheduler", "CosineAnnealingCycleRestart",
               "WarmupScheduler", "ReduceLROnPlateauV2", "OneCycleLR"], ns)
    load_defs(path("torchreid/losses/asl.py"), ["AMBinaryLoss", "filter_input",
                                                "label_smoothing"], ns)
    load_defs(path("torchreid/losses/am_softmax.py"), ["AngleSimpleLinear"], ns)
    tt = parse(path("torchreid/utils/torchtools.py"))
    ema_cls = [n for n in tt.body if getattr(n, "name", None) == "ModelEmaV2"]
    exec(compile(ast.Module(body=ema_cls, type_ignores=[]), "torchtools.py", "exec"), ns)

    torch.manual_seed(0)
    model = Tiny(ns["AngleSimpleLinear"](16, CLASSES))
    init = _state(model)
    rs = np.random.RandomState(0)
    x = rs.rand(STEPS_PER_EPOCH, BATCH, SIZE, SIZE, 3).astype("float32")
    y = (rs.rand(STEPS_PER_EPOCH, BATCH, CLASSES) < 0.3).astype("float32")
    loader = [(torch.from_numpy(xb).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(yb))
              for xb, yb in zip(x, y)]

    # main.py -> build_optimizer(model, **optimizer_kwargs(cfg)) / build_lr_scheduler(...)
    optimizer = ns["build_optimizer"](model, optim="sam", base_optim="sgd", lr_finder=False,
                                      lr=lr, weight_decay=wd, momentum=0.9, sgd_dampening=0,
                                      sgd_nesterov=False, nbd=True, sam_rho=rho,
                                      sam_adaptive=False)
    scheduler = ns["build_lr_scheduler"](optimizer, "onecycle", None,
                                         num_iter=STEPS_PER_EPOCH, max_epoch=epochs,
                                         pct_start=pct_start, lr_decay_factor=decay_factor)
    groups = optimizer.param_groups
    assert np.allclose([g["lr"] for g in groups], [lr / 100, 2 * lr / 100, lr / 100])
    assert [g["weight_decay"] for g in groups] == [wd, 0.0, 0.0]

    losses = []

    class RecordingAMBinaryLoss(ns["AMBinaryLoss"]):
        def forward(self, *a, **kw):
            loss = super().forward(*a, **kw)
            losses.append(float(loss))
            return loss

    main_loss = RecordingAMBinaryLoss(m=m, k=k, t=1.0, s=s, gamma_neg=gamma_neg,
                                      gamma_pos=gamma_pos, label_smooth=0.0)
    from torch.cuda.amp import GradScaler, autocast
    metrics = types.SimpleNamespace(accuracy_multilabel=lambda logits, targets: torch.tensor(0.))
    eng_ns = {**ns, "torch": torch, "autocast": autocast, "metrics": metrics, "SAM": ns["SAM"]}
    ml_path = path("torchreid/engine/image/multilabel.py")
    methods = load_methods(ml_path, "MultilabelEngine",
                           ["forward_backward", "_forward_model", "_single_model_losses",
                            "exit_on_plateau_and_choose_best", "ema_smooth"], eng_ns)

    class Engine:  # the attributes MultilabelEngine.__init__ / Engine.__init__ set
        pass

    for name, fn in methods.items():
        setattr(Engine, name, fn)
    eng = Engine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eng.scaler = GradScaler(enabled=False)
    eng.models, eng.optims = {"main_model": model}, {"main_model": optimizer}
    eng.main_model_name, eng.scales, eng.main_loss = "main_model", {"main_model": s}, main_loss
    eng.enable_sam = isinstance(optimizer, ns["SAM"])
    eng.lr_finder, eng.compression_ctrl, eng.clip_grad, eng.mix_precision = False, None, 0., False
    eng.aug_index = eng.lam = None
    eng.epoch, eng.use_gpu = 0, False
    eng.get_model_names = lambda names=None: ["main_model"]
    eng._should_turn_off_mutual_learning = lambda epoch: True
    eng.parse_data_for_train = lambda data, use_gpu=False: (data[0], data[1])
    eng._apply_batch_augmentation = lambda imgs: imgs
    assert eng.enable_sam
    ema = ns["ModelEmaV2"](model, decay=EMA_DECAY)

    lrs, lrs_bias, momenta, warmup, states = [], [], [], [], {}
    for eng.epoch in range(epochs):
        model.train()
        for data in loader:  # Engine.train, per batch
            lrs.append(groups[0]["lr"])
            lrs_bias.append(groups[1]["lr"])
            momenta.append(groups[0]["momentum"])
            eng.forward_backward(data)
            finished = scheduler.warmup_finished  # self.get_current_lr()
            ema.update(model)  # if self.use_ema_decay
            scheduler.step()  # if self.per_batch_annealing: self.update_lr()
        warmup.append(bool(finished))
        if eng.epoch == 0:
            states["first"], states["first_ema"] = _state(model), _state(ema.module)
    states["final"], states["ema"] = _state(model), _state(ema.module)
    first_pass, second_pass = losses[0::2], losses[1::2]
    assert len(first_pass) == len(second_pass) == epochs * STEPS_PER_EPOCH

    # MultilabelEngine's early stopping on SCORES, with this run's warm-up flags
    stopper = Engine()
    stopper.prev_smooth_accuracy, stopper.iter_to_wait, stopper.best_metric = 0., 0, 0.
    stopper.train_patience = patience
    stop_epoch = -1
    for epoch, score in enumerate(SCORES):
        stopper.warmup_finished = warmup[epoch]
        should_exit, _ = stopper.exit_on_plateau_and_choose_best(score)
        if should_exit:
            stop_epoch = epoch
            break

    config = {"lr": lr, "weight_decay": wd, "epochs": epochs, "pct_start": pct_start,
              "lr_decay_factor": decay_factor, "rho": rho, "s": s, "m": m, "k": k,
              "gamma_neg": gamma_neg, "gamma_pos": gamma_pos, "patience": patience,
              "ema_decay": EMA_DECAY, "steps_per_epoch": STEPS_PER_EPOCH, "batch": BATCH,
              "classes": CLASSES, "size": SIZE, "torch": torch.__version__,
              "official_commit": args.commit, "official_config": CONFIG}
    arrays = {"config": json.dumps(config), "x": x, "y": y, "loss": np.array(first_pass),
              "loss_second": np.array(second_pass), "lr": np.array(lrs),
              "lr_bias": np.array(lrs_bias), "momentum": np.array(momenta),
              "warmup_finished": np.array(warmup), "scores": np.array(SCORES),
              "stop_epoch": np.array(stop_epoch)}
    arrays.update({f"init/{k}": v for k, v in init.items() if v.dtype.kind == "f"})
    for kind in ("first", "first_ema", "final", "ema"):
        arrays.update({f"{kind}/{k}": v.astype(np.float32) for k, v in states[kind].items()
                       if v.dtype.kind == "f"})
    out = os.path.join(args.out, "train_aam_coco.npz")
    np.savez_compressed(out, **arrays)
    print(out, len(first_pass), "steps; loss", first_pass[0], "->", first_pass[-1],
          "; warm-up over after epoch", warmup.index(True), "; stop epoch", stop_epoch)


if __name__ == "__main__":
    main()
