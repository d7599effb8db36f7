"""Makes the TResNet / ML-Decoder parity fixtures ``tests/fixtures/tresnet_*.npz``.

Run with a Python that has torch and timm (not a keras-mld dependency)::

    python scripts/make_official_fixtures_tresnet.py --official /path/to/ML_Decoder \
        --out tests/fixtures

``--official`` is a checkout of https://github.com/Alibaba-MIIL/ML_Decoder (fixtures made
at commit 8a9e984f671c9c30c98d2c45dfcaf4383381c254); the script imports, from that path,
``src_files/models/tresnet/tresnet.py`` (TResNet, BasicBlock, Bottleneck),
``src_files/models/tresnet/layers/*.py`` (SpaceToDepth, anti-aliasing, SE) and
``src_files/ml_decoder/ml_decoder.py`` (MLDecoder, add_ml_decoder_head). Nothing of that
repository is copied into keras-mld. timm's own TResNet (``timm/models/tresnet.py``,
timm 1.0.31) makes the timm-format fixture.

Stand-in: the official code uses ``inplace_abn.InPlaceABN`` (a CUDA extension). This
script installs a CPU stand-in module ``inplace_abn`` whose ``InPlaceABN`` is batch norm
in eval mode with scale ``|weight| + eps`` (what InPlaceABN computes, and what the official
``InplacABN_to_ABN`` and timm's ``checkpoint_filter_fn`` convert to) followed by the
configured activation (leaky ReLU with ``activation_param``, or identity). The parameter and
buffer names are those of InPlaceABN (weight, bias, running_mean, running_var), so the
state dicts have the official checkpoint layout. Second shim: recent torch's
``nn.TransformerDecoder.forward`` reads ``layers[0].self_attn.batch_first``, which the
official self-attention-free layer lacks; the script sets that one attribute (False, the
official [T, B, D] layout), and it passes ``tgt_is_causal`` / ``memory_is_causal``, which
the official ``forward`` does not accept: a wrapper drops them (no masks are used); nothing
else of the official code is changed.

Every model: fixed seed, random init, then every norm layer gets random signed weights
(so ``|w| + eps`` matters), random biases and non-trivial running statistics; eval mode.
Reduced depth / width (tiny fixtures). Inputs are pixels in [0, 255]; the models get
pixels / 255 (the official preprocessing, no mean / std).

Fixtures (each npz: ``param/<state-dict key>`` arrays, ``pixels`` [B, H, W, 3] NHWC,
``logits`` [B, N], ``config_*`` scalars):

* ``tresnet_official.npz``: official TResNet alone (BasicBlock stages 1-2, layers
  [1, 2, 1, 1], width_factor 0.125, 80x80 input so stage 4 downsamples an odd 5x5 map),
  with its GAP + fc head (10 classes).
* ``tresnet_mldecoder_full.npz``: official TResNet with ``first_two_layers=Bottleneck``
  (the official TResnetL layout; layers [1, 1, 1, 1], width 0.125) + official MLDecoder,
  full decoding N = K = 8, decoder_embedding 16, 64x64 input; ``class_names``.
* ``tresnet_mldecoder_group.npz``: official TResNet (BasicBlock layout, layers
  [1, 1, 2, 1], width 0.125) + official MLDecoder, group decoding N = 10, K = 4
  (g = 3, 12 group outputs cut to 10), decoder_embedding 16, non-square 64x96 input.
* ``tresnet_timm.npz``: timm ``TResNet(layers=[1, 1, 1, 1], width_factor=0.2, v2=True,
  num_classes=10)`` (timm parameter names, plain BatchNorm weights), 64x64 input.
"""
import argparse
import os
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F


def install_inplace_abn_stand_in():
    mod = types.ModuleType("inplace_abn")

    class InPlaceABN(torch.nn.BatchNorm2d):
        """CPU stand-in: eval-mode BN with scale |w| + eps, then the activation."""

        def __init__(self, num_features, activation="leaky_relu", activation_param=0.01,
                     eps=1e-5, momentum=0.1, affine=True):
            super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)
            self.activation, self.activation_param = activation, activation_param

        def forward(self, x):
            assert not self.training, "stand-in supports eval mode only"
            x = F.batch_norm(x, self.running_mean, self.running_var, self.weight.abs() + self.eps,
                             self.bias, False, 0.0, self.eps)
            if self.activation == "leaky_relu":
                return F.leaky_relu(x, self.activation_param)
            if self.activation == "identity":
                return x
            raise ValueError(self.activation)

    mod.InPlaceABN = InPlaceABN
    mod.ABN = InPlaceABN
    sys.modules["inplace_abn"] = mod


def _drop_causal_kwargs(layer):
    official_forward = type(layer).forward

    def forward(tgt, memory, tgt_is_causal=None, memory_is_causal=False, **kwargs):
        return official_forward(layer, tgt, memory, **kwargs)
    return forward


def randomize_norms(model, gen):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
                m.weight.copy_(sign * (0.5 + torch.rand(n, generator=gen)))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))


def state_arrays(model):
    return {f"param/{k}": v.detach().cpu().numpy().astype(np.float32)
            for k, v in model.state_dict().items() if v.dtype.is_floating_point}


def run(model, pixels):
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        return model(x).numpy().astype(np.float32)


def save(path, **arrays):
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    print(f"{path}: {os.path.getsize(path) / 1024:.0f} KiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official", required=True, help="path to an Alibaba-MIIL/ML_Decoder checkout")
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    install_inplace_abn_stand_in()
    sys.path.insert(0, os.path.abspath(args.official))
    from src_files.models.tresnet import tresnet as official  # noqa: E402
    from src_files.ml_decoder.ml_decoder import add_ml_decoder_head  # noqa: E402
    import timm.models.tresnet as timm_tresnet  # noqa: E402

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    os.makedirs(args.out, exist_ok=True)

    def pixels(h, w, b=2):
        # blocky random images plus noise: the samples differ in their low frequencies too
        coarse = rng.uniform(0, 255, size=(b, h // 8, w // 8, 3)).repeat(8, 1).repeat(8, 2)
        return np.clip(coarse + rng.normal(0, 20, size=(b, h, w, 3)), 0, 255).astype(np.float32)

    # 1. official TResNet alone (GAP + fc head)
    model = official.TResNet(layers=[1, 2, 1, 1], num_classes=10, width_factor=0.125)
    randomize_norms(model, gen)
    with torch.no_grad():
        model.head.fc.bias.copy_(0.1 * torch.randn(10, generator=gen))
        model.head.fc.weight.mul_(10.0)
    model.eval()
    px = pixels(80, 80)
    save(os.path.join(args.out, "tresnet_official.npz"), pixels=px, logits=run(model, px),
         config_layers=np.array([1, 2, 1, 1]), config_width_factor=np.float32(0.125),
         config_v2=np.bool_(False), **state_arrays(model))

    # 2. + 3. official TResNet + official ML-Decoder
    for fname, layers, block, n, k, (h, w) in (
            ("tresnet_mldecoder_full.npz", [1, 1, 1, 1], official.Bottleneck, 8, -1, (64, 64)),
            ("tresnet_mldecoder_group.npz", [1, 1, 2, 1], official.BasicBlock, 10, 4, (64, 96))):
        model = official.TResNet(layers=layers, num_classes=n, width_factor=0.125,
                                 first_two_layers=block)
        model = add_ml_decoder_head(model, num_classes=n, num_of_groups=k, decoder_embedding=16)
        for layer in model.head.decoder.layers:
            # torch >= 2.x nn.TransformerDecoder.forward reads layers[0].self_attn.batch_first
            # (to size a causal mask it does not use here); the official layer has no
            # self-attention, so give it that one attribute: inputs are [T, B, D].
            layer.self_attn = types.SimpleNamespace(batch_first=False)
            # ... and passes tgt_is_causal / memory_is_causal, which the official
            # forward() does not take: drop those two (both unused without masks).
            layer.forward = _drop_causal_kwargs(layer)
        randomize_norms(model, gen)
        with torch.no_grad():
            model.head.decoder.duplicate_pooling_bias.copy_(0.1 * torch.randn(n, generator=gen))
        model.eval()
        px = pixels(h, w)
        names = np.array([f"class_{i:02d}" for i in range(n)])
        save(os.path.join(args.out, fname), pixels=px, logits=run(model, px), class_names=names,
             config_layers=np.array(layers), config_width_factor=np.float32(0.125),
             config_v2=np.bool_(block is official.Bottleneck), **state_arrays(model))

    # 4. timm TResNet (timm names, plain BatchNorm2d)
    model = timm_tresnet.TResNet(layers=[1, 1, 1, 1], width_factor=0.2, v2=True, num_classes=10)
    randomize_norms(model, gen)
    model.eval()
    px = pixels(64, 64)
    save(os.path.join(args.out, "tresnet_timm.npz"), pixels=px, logits=run(model, px),
         config_layers=np.array([1, 1, 1, 1]), config_width_factor=np.float32(0.2),
         config_v2=np.bool_(True), **state_arrays(model))


if __name__ == "__main__":
    main()
