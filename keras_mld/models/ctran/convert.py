"""Official C-Tran weights -> :class:`keras_mld.layers.CTranHead`.

The official model (github.com/QData/C-Tran, ``models/CTran.py``, ``models/utils.py``,
``models/transformer_layers.py``) names its head weights ``label_lt.weight`` ``[N, D]``,
``known_label_lt.weight`` ``[3, D]`` (rows: unknown, negative, positive),
``LayerNorm.*``, ``self_attn_layers.<i>.transformer_layer.*`` and ``output_linear.*``;
``backbone.*`` (the ResNet-101) is not part of the head.

The unknown state. ``known_label_lt`` has ``padding_idx=0`` but ``weights_init`` re-draws
row 0 after construction: in a trained official model the unknown state is a fixed,
non-zero vector ``u0`` that was never updated. :class:`~keras_mld.layers.CTranHead` has a
zero unknown state, so with label-mask training (``use_lmt=True``) ``u0`` is folded in:
``label_embeddings = label_lt + u0``, ``state_embeddings = [known_label_lt[1] - u0,
known_label_lt[2] - u0]``, which gives the official logits for every state. Without it
(``use_lmt=False``) the official forward adds no state embedding at all, so the state
embeddings are set to zero and known labels have no effect, as there.
"""
import numpy as np

from keras_mld.checkpoints.loader import WeightLoader, layer_count, require_weights
from keras_mld.checkpoints.reader import strip_prefix
from keras_mld.models.ctran.ctran import CTranHead

_WHAT = "convert_ctran_state_dict"
_LAYERS = "self_attn_layers"


def load_ctran_state_dict(head, state_dict, use_lmt, allow_nonfinite=False):
    """Copy an official C-Tran state dict into the built ``head`` (built with
    ``input_proj=False``); ``use_lmt``: whether the official model ran with ``--use_lmt``
    (the weights do not tell); ``allow_nonfinite``: accept NaN / inf weights (refused by
    default, with the key named). Returns ``head``."""
    if not isinstance(use_lmt, bool):
        raise ValueError(f"{_WHAT}: use_lmt must be True or False (the official --use_lmt "
                         f"flag of the run), got {use_lmt!r}")
    if head.input_proj is not None:
        raise ValueError(f"{_WHAT}: the official C-Tran has no input projection: build the "
                         f"head with input_proj=False")
    sd = WeightLoader(strip_prefix(state_dict), _WHAT, allow_nonfinite)
    d, h = head.dim, head.num_heads
    sd.layer_norm(head.input_norm, "LayerNorm")
    for i, layer in enumerate(head.encoder_layers):
        p = f"{_LAYERS}.{i}.transformer_layer"
        sd.mha(layer.self_attn, p + ".self_attn", d, h)
        for name in ("linear1", "linear2"):
            sd.dense(getattr(layer, name), f"{p}.{name}")
        for name in ("norm1", "norm2"):
            sd.layer_norm(getattr(layer, name), f"{p}.{name}")
    labels = sd.get("label_lt.weight").astype(np.float64)
    states = sd.get("known_label_lt.weight").astype(np.float64)
    if states.shape != (3, d):
        raise ValueError(f"{_WHAT}: known_label_lt.weight must have shape (3, {d}), got "
                         f"{states.shape}")
    if use_lmt:
        labels = labels + states[0]
        states = states[1:] - states[0]
    else:
        states = np.zeros((2, d))
    sd.assign(head.label_embeddings, labels, "label_lt.weight")
    sd.assign(head.state_embeddings, states, "known_label_lt.weight")
    sd.assign(head.class_kernel, sd.get("output_linear.weight"), "output_linear.weight")
    sd.assign(head.class_bias, sd.get("output_linear.bias"), "output_linear.bias")
    # conv_downsample: built only with the hard-coded downsample=True (off in the official code)
    sd.check_all_used(ignore_prefixes=("backbone.", "conv_downsample."))
    return head


def convert_ctran_state_dict(state_dict, *, use_lmt, num_heads=4, dropout=0.1, name="ctran",
                             allow_nonfinite=False):
    """A built :class:`~keras_mld.layers.CTranHead` holding the weights of an official
    C-Tran model (``{name: array}``, e.g. from :func:`keras_mld.convert.read_state_dict`;
    a ``module.`` prefix is stripped).

    ``use_lmt`` (required): the official ``--use_lmt`` flag of the run (label-mask
    training; see the module docstring). ``num_heads``: official ``--heads`` (default 4).
    The number of layers and the width (official 2048 = the backbone channels, no
    projection) come from the weights. The head takes the backbone's feature map
    ``[B, H, W, D]`` (NHWC) and optionally ``known_labels``. NaN / inf weights are refused
    (key named) unless ``allow_nonfinite=True``.
    """
    sd = strip_prefix(state_dict)
    if "label_lt.weight" not in sd:
        raise ValueError(f"{_WHAT}: state_dict has no 'label_lt.weight': not an official "
                         f"C-Tran state dict")
    require_weights(sd, _WHAT, {"label_lt.weight": (None, None)})
    num_classes, dim = sd["label_lt.weight"].shape
    layers = layer_count(sd, _LAYERS)
    if layers < 1:
        raise ValueError(f"{_WHAT}: state_dict has no {_LAYERS}.<i> entries")
    for i in range(layers):  # every layer's width from real weights, before building
        p = f"{_LAYERS}.{i}.transformer_layer"
        require_weights(sd, _WHAT, {f"{p}.self_attn.in_proj_weight": (3 * dim, dim),
                                    f"{p}.linear1.weight": (None, dim)})
    ff_dim = int(sd[f"{_LAYERS}.0.transformer_layer.linear1.weight"].shape[0])
    head = CTranHead(int(num_classes), embed_dim=None, num_layers=layers, num_heads=num_heads,
                     ff_dim=ff_dim, dropout=dropout, input_proj=False, name=name)
    head.build((None, None, None, int(dim)))
    return load_ctran_state_dict(head, sd, use_lmt, allow_nonfinite)
