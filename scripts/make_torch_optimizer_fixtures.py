"""Write ``tests/fixtures/torch_optimizers.npz``: PyTorch's own Adam, AdamW and SGD under
``OneCycleLR`` (learning rate and momentum cycled), for the tests of
``keras_mld/training/torch_optimizers.py`` and ``schedules.py``.

Run with a Python that has torch (CI does not need it: the tests read the fixture)::

    python scripts/make_torch_optimizer_fixtures.py --out tests/fixtures

Each case: two parameters (a matrix in a weight-decay group with its own lr factor, a
vector in a ``weight_decay: 0`` group), 12 steps of fixed random gradients (drawn once,
so the trajectory does not depend on the loss), ``OneCycleLR(max_lr, total_steps=12,
pct_start=0.25, cycle_momentum=True)``; stored: the initial values, the gradients, the
parameters after every step and the scheduler's lr and momentum at every step.

Also ``plateau/<case>/metrics`` and ``plateau/<case>/lr``: ``ReduceLROnPlateau`` stepped with
a fixed sequence of validation values, and the learning rate after each step.
"""
import argparse
import json
import os

import numpy as np
import torch

CASES = {
    "adam_coupled": dict(opt="Adam", wd=1e-2, lr_factor=2.0, kw={"eps": 1e-8}),
    "adamw": dict(opt="AdamW", wd=5e-2, lr_factor=1.0, kw={"eps": 1e-6}),
    "sgd": dict(opt="SGD", wd=5e-4, lr_factor=2.0, kw={"momentum": 0.9}),
    "sgd_nesterov": dict(opt="SGD", wd=5e-4, lr_factor=1.0, kw={"momentum": 0.9,
                                                                  "nesterov": True}),
}
STEPS, MAX_LR, PCT = 12, 0.05, 0.25


def run(case):
    rs = np.random.RandomState(0)
    w0 = rs.randn(3, 4).astype("float32")
    b0 = rs.randn(4).astype("float32")
    grads = rs.randn(STEPS, 3 * 4 + 4).astype("float32")
    w = torch.nn.Parameter(torch.tensor(w0))
    b = torch.nn.Parameter(torch.tensor(b0))
    groups = [{"params": [w], "weight_decay": case["wd"]},
              {"params": [b], "weight_decay": 0.0}]
    opt = getattr(torch.optim, case["opt"])(groups, lr=MAX_LR, **case["kw"])
    # per-group lr factor: OneCycleLR takes one max_lr per group
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[MAX_LR * case["lr_factor"], MAX_LR], total_steps=STEPS, pct_start=PCT,
        cycle_momentum=True)
    ws, bs, lrs, moms = [], [], [], []
    for t in range(STEPS):
        lrs.append(opt.param_groups[1]["lr"])
        g = opt.param_groups[1]
        moms.append(g["betas"][0] if "betas" in g else g["momentum"])
        w.grad = torch.tensor(grads[t, :12].reshape(3, 4))
        b.grad = torch.tensor(grads[t, 12:])
        opt.step()
        sched.step()
        ws.append(w.detach().numpy().copy())
        bs.append(b.detach().numpy().copy())
    return {"w0": w0, "b0": b0, "grads": grads, "w": np.stack(ws), "b": np.stack(bs),
            "lr": np.array(lrs), "momentum": np.array(moms)}


PLATEAU = {
    "min_rel": {"mode": "min", "factor": 0.5, "patience": 2},
    "max_abs_cooldown": {"mode": "max", "factor": 0.1, "patience": 1, "threshold": 0.01,
                         "threshold_mode": "abs", "cooldown": 2, "min_lr": 1e-4},
}


def plateau(kwargs):
    rs = np.random.RandomState(1)
    metrics = np.round(1.0 + 0.02 * rs.randn(30).cumsum(), 4)
    metrics[10:14] = metrics[9] * (1 - 5e-5)  # improvements below the relative threshold
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    lrs = []
    for m in metrics:
        sched.step(float(m))
        lrs.append(opt.param_groups[0]["lr"])
    return metrics, np.array(lrs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="tests/fixtures")
    out = parser.parse_args().out
    arrays = {"config": json.dumps({"cases": CASES, "plateau": PLATEAU, "steps": STEPS,
                                    "max_lr": MAX_LR,
                                    "pct_start": PCT, "torch": torch.__version__})}
    for name, case in CASES.items():
        for k, v in run(case).items():
            arrays[f"{name}/{k}"] = v
    for name, kwargs in PLATEAU.items():
        arrays[f"plateau/{name}/metrics"], arrays[f"plateau/{name}/lr"] = plateau(kwargs)
    np.savez_compressed(os.path.join(out, "torch_optimizers.npz"), **arrays)


if __name__ == "__main__":
    main()
