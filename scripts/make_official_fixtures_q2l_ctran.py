"""Write the Query2Label and C-Tran parity fixtures from the OFFICIAL PyTorch code.

Run with a Python that has torch (CI does not need it: the tests read the fixtures)::

    python scripts/make_official_fixtures_q2l_ctran.py \
        --q2l /path/to/query2labels --ctran /path/to/C-Tran --out tests/fixtures

Official code, imported from the given checkouts (not copied into this repository):

* Query2Label, github.com/SlongLiu/query2labels, commit
  55eb05064f4badbe03423b79e5c9d143da2dff2e: ``lib/models/query2label.py`` (``build_q2l``,
  ``Qeruy2Label``, ``GroupWiseLinear``), ``lib/models/transformer.py`` (``build_transformer``
  and its layers), ``lib/models/position_encoding.py`` (``PositionEmbeddingSine``).
  ``models.backbone.build_backbone`` is replaced by a module that returns the given
  feature map and the official sine encoding of it (what the official ``Joiner`` returns),
  built as ``build_position_encoding`` does (``hidden_dim // 2`` features,
  ``normalize=True``) but with ``maxH, maxW`` = the map's height and width (the official
  builder only makes square maps, ``img_size // 32``); ``utils.misc`` is stubbed (unused).
* C-Tran, github.com/QData/C-Tran, commit 560cf6f47a7021b9993d63c78f61565840786c24:
  ``models/CTran.py`` (``CTranModel``), ``models/transformer_layers.py``,
  ``models/utils.py``, ``models/position_enc.py``. ``models.backbone.Backbone`` (a
  pretrained ResNet-101) is replaced by the identity on the given feature map; the one
  constant ``hidden = 2048`` of ``CTranModel.__init__`` is replaced by the fixture width
  (2048-wide weights would make megabyte fixtures); ``Tensor.cuda`` is the identity (CPU).

Every parameter is redrawn (fixed seeds): weights ~ N(0, 1/fan_in), biases and LayerNorm
shifts ~ N(0, 0.2^2), LayerNorm scales ~ 1 + N(0, 0.2^2), query embeddings ~ N(0, 1);
stored as float32; the official forward then runs in eval mode in float64 on exactly those
values. Each ``.npz`` holds ``sd/<official name>`` arrays, ``features_nchw``, ``logits``
(and C-Tran ``masks``) and a JSON ``config``. One Query2Label fixture is also written as a
``.pth`` checkpoint (``{"state_dict": {"module." + name: tensor}, "epoch": 1}``) to test
the torch-free reader.
"""
import argparse
import collections
import importlib
import json
import os
import sys
import types

import numpy as np
import torch
from torch import nn

Q2L_COMMIT = "55eb05064f4badbe03423b79e5c9d143da2dff2e"
CTRAN_COMMIT = "560cf6f47a7021b9993d63c78f61565840786c24"

Q2L_CONFIGS = {  # name: (official flags, feature map (C, H, W))
    "default": (dict(), (32, 4, 4)),
    "nonsquare": (dict(), (32, 3, 5)),
    "keep_all": (dict(keep_input_proj=True, keep_first_self_attn_dec=True,
                      keep_other_self_attn_dec=True), (24, 4, 4)),
    "pre_norm": (dict(pre_norm=True, keep_first_self_attn_dec=True,
                      keep_other_self_attn_dec=True), (32, 3, 3)),
    "enc2_dec3": (dict(enc_layers=2, dec_layers=3), (32, 4, 4)),
    "first_only_no_encoder": (dict(enc_layers=0, keep_first_self_attn_dec=True), (32, 2, 3)),
}
Q2L_BASE = dict(hidden_dim=32, nheads=4, dim_feedforward=64, enc_layers=1, dec_layers=2,
                dropout=0.1, pre_norm=False, keep_input_proj=False,
                keep_first_self_attn_dec=False, keep_other_self_attn_dec=False, num_class=5)
CTRAN = dict(hidden=32, num_labels=6, layers=3, heads=4, dropout=0.1, map=(3, 5))
BATCH = 2


def _clear_models():
    for name in [m for m in sys.modules if m in ("models", "utils") or
                 m.startswith(("models.", "utils."))]:
        del sys.modules[name]


def _package(name, path=None):
    mod = types.ModuleType(name)
    mod.__path__ = [path] if path else []
    sys.modules[name] = mod
    return mod


def randomize(model, gen, skip=("backbone.",)):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(skip):
                continue
            short = name.rsplit(".", 1)[-1]
            is_norm = "norm" in name.lower()
            if is_norm and short == "weight":
                val = 1 + 0.2 * torch.randn(p.shape, generator=gen)
            elif short in ("bias", "in_proj_bias", "b") or p.dim() == 1:
                val = 0.2 * torch.randn(p.shape, generator=gen)
            elif "query_embed" in name:
                val = torch.randn(p.shape, generator=gen)
            else:
                fan_in = p[0].numel() if p.dim() == 4 else p.shape[-1]  # conv / linear
                val = torch.randn(p.shape, generator=gen) / np.sqrt(fan_in)
            p.copy_(val.float())


def state_arrays(model):
    return {f"sd/{k}": v.detach().float().numpy() for k, v in model.state_dict().items()}


def save(path, arrays, config):
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, config=np.array(json.dumps(config)), **arrays)
    os.replace(tmp, path)
    print(f"{path}: {os.path.getsize(path)} bytes")


# ------------------------------------------------------------------------- Query2Label
def load_q2l(root):
    _clear_models()
    lib = os.path.join(root, "lib")
    models = _package("models", os.path.join(lib, "models"))
    _package("utils")
    misc = types.ModuleType("utils.misc")
    misc.clean_state_dict = lambda sd: sd  # unused by build_q2l / forward
    sys.modules["utils.misc"] = misc
    pe = importlib.import_module("models.position_encoding")
    transformer = importlib.import_module("models.transformer")

    class FeatureJoiner(nn.Module):
        """Stands in for the official Joiner(backbone, position_embedding)."""

        def __init__(self, channels, pos):
            super().__init__()
            self.num_channels = channels
            self.pos = pos

        def forward(self, x):
            return [x], [self.pos(x).to(x.dtype)]

    backbone = types.ModuleType("models.backbone")
    backbone.FeatureJoiner = FeatureJoiner
    backbone.build_backbone = lambda args: FeatureJoiner(
        args.channels, pe.PositionEmbeddingSine(args.hidden_dim // 2, normalize=True,
                                                maxH=args.map_h, maxW=args.map_w))
    sys.modules["models.backbone"] = backbone
    models.backbone = backbone
    q2l = importlib.import_module("models.query2label")
    assert q2l.build_transformer is transformer.build_transformer
    return q2l


def make_q2l(q2l, name, flags, cmap, seed, out):
    args = argparse.Namespace(**{**Q2L_BASE, **flags})
    c, h, w = cmap
    args.channels, args.map_h, args.map_w = c, h, w
    torch.manual_seed(seed)
    model = q2l.build_q2l(args)
    gen = torch.Generator().manual_seed(seed)
    randomize(model, gen)
    model.eval()
    feats = torch.randn((BATCH, c, h, w), generator=gen).float()
    with torch.no_grad():
        logits = model.double()(feats.double())
    model.float()
    arrays = state_arrays(model)
    cfg = {"official": f"SlongLiu/query2labels@{Q2L_COMMIT}", "args": vars(args)}
    save(os.path.join(out, f"q2l_{name}.npz"), dict(
        arrays, features_nchw=feats.numpy(), logits=logits.numpy()), cfg)
    return model


# ------------------------------------------------------------------------------ C-Tran
def load_ctran(root):
    _clear_models()
    mdir = os.path.join(root, "models")
    _package("models", mdir)

    class Backbone(nn.Module):
        def forward(self, images):
            return images  # the given feature map [B, hidden, H, W]

    bb = types.ModuleType("models.backbone")
    bb.Backbone = Backbone
    sys.modules["models.backbone"] = bb
    for sub in ("utils", "transformer_layers", "position_enc"):
        importlib.import_module(f"models.{sub}")
    path = os.path.join(mdir, "CTran.py")
    src = open(path).read()
    assert src.count("hidden = 2048") == 1, "CTran.py changed: check the width patch"
    src = src.replace("hidden = 2048", f"hidden = {CTRAN['hidden']}")
    mod = types.ModuleType("models.CTran")
    mod.__file__, mod.__package__ = path, "models"
    sys.modules["models.CTran"] = mod
    exec(compile(src, path, "exec"), mod.__dict__)
    torch.Tensor.cuda = lambda self, *a, **k: self  # CPU run
    return mod


def make_ctran(ctran, name, use_lmt, masks, seed, out):
    torch.manual_seed(seed)
    model = ctran.CTranModel(CTRAN["num_labels"], use_lmt, pos_emb=False,
                             layers=CTRAN["layers"], heads=CTRAN["heads"],
                             dropout=CTRAN["dropout"])
    unknown_row_after_init = model.known_label_lt.weight[0].detach().clone()
    gen = torch.Generator().manual_seed(seed)
    randomize(model, gen)
    model.eval()
    h, w = CTRAN["map"]
    feats = torch.randn((BATCH, CTRAN["hidden"], h, w), generator=gen).float()
    logits = []
    with torch.no_grad():
        model.double()
        for m in masks:
            logits.append(model(feats.double(), torch.tensor(m, dtype=torch.float64))[0].numpy())
    model.float()
    cfg = {"official": f"QData/C-Tran@{CTRAN_COMMIT}", "use_lmt": use_lmt, **CTRAN,
           "unknown_row_after_official_init_abs_mean":
               float(unknown_row_after_init.abs().mean())}
    save(os.path.join(out, f"ctran_{name}.npz"), dict(
        state_arrays(model), features_nchw=feats.numpy(), masks=np.array(masks, np.float32),
        logits=np.stack(logits)), cfg)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--q2l", required=True, help="checkout of SlongLiu/query2labels")
    p.add_argument("--ctran", required=True, help="checkout of QData/C-Tran")
    p.add_argument("--out", default="tests/fixtures")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)

    q2l = load_q2l(a.q2l)
    for seed, (name, (flags, cmap)) in enumerate(Q2L_CONFIGS.items()):
        model = make_q2l(q2l, name, flags, cmap, seed, a.out)
        if name == "default":
            sd = collections.OrderedDict(
                ("module." + k, v.detach().clone()) for k, v in model.state_dict().items())
            path = os.path.join(a.out, "q2l_default.pth")
            torch.save({"state_dict": sd, "epoch": 1}, path + ".tmp")
            os.replace(path + ".tmp", path)
            print(f"{path}: {os.path.getsize(path)} bytes")

    ctran = load_ctran(a.ctran)
    n = CTRAN["num_labels"]
    some = [[-1, 0, 1, -1, 1, -1], [1, -1, -1, 0, 0, -1]]
    masks = [[[-1] * n] * BATCH, some, [[0, 1, 1, 0, 1, 0], [1, 0, 0, 0, 1, 1]]]
    make_ctran(ctran, "lmt", True, masks, 100, a.out)
    make_ctran(ctran, "no_lmt", False, [some], 101, a.out)


if __name__ == "__main__":
    main()
