"""Official Query2Label weights -> :class:`keras_mld.layers.Query2LabelHead`.

The official model (github.com/SlongLiu/query2labels, ``lib/models/query2label.py``,
``lib/models/transformer.py``) names its head weights ``input_proj.*`` (only with
``--keep_input_proj``), ``query_embed.weight``, ``transformer.encoder.layers.<i>.*``,
``transformer.encoder.norm.*`` (only with ``--pre_norm``), ``transformer.decoder.layers.<i>.*``
(``self_attn`` and ``norm1`` only where kept), ``transformer.decoder.norm.*``, ``fc.W``,
``fc.b``; ``backbone.*`` (the CNN and the sine-encoding buffer) is not part of the head.
"""
import numpy as np

from keras_mld.checkpoints.loader import WeightLoader, layer_count, require_weights
from keras_mld.checkpoints.reader import strip_prefix
from keras_mld.models.query2label.query2label import Query2LabelHead

_WHAT = "convert_query2label_state_dict"
_ENC = "transformer.encoder.layers"
_DEC = "transformer.decoder.layers"


def query2label_options(state_dict, pre_norm=None):
    """The :class:`~keras_mld.layers.Query2LabelHead` options that an official
    Query2Label state dict determines (``num_classes``, ``hidden_dim``, ``ff_dim``, layer
    counts, ``keep_*``, ``pre_norm``) and the input channels, as ``(options, channels)``.

    ``pre_norm`` is read from ``transformer.encoder.norm`` (present only with
    ``--pre_norm``) when there is an encoder; without one, pass it.
    """
    sd = strip_prefix(state_dict)
    if "query_embed.weight" not in sd:
        raise ValueError(f"{_WHAT}: state_dict has no 'query_embed.weight': not an official "
                         f"Query2Label state dict")
    require_weights(sd, _WHAT, {"query_embed.weight": (None, None)})
    num_classes, dim = sd["query_embed.weight"].shape
    enc, dec = layer_count(sd, _ENC), layer_count(sd, _DEC)
    if dec < 1:
        raise ValueError(f"{_WHAT}: state_dict has no {_DEC}.<i> entries")
    for prefix, count, attention in ((_ENC, enc, "self_attn"), (_DEC, dec, "multihead_attn")):
        for i in range(count):  # every layer's width from real weights, before building
            require_weights(sd, _WHAT, {f"{prefix}.{i}.{attention}.in_proj_weight": (3 * dim, dim),
                                        f"{prefix}.{i}.linear1.weight": (None, dim)})
    keep_input_proj = "input_proj.weight" in sd
    if keep_input_proj:
        require_weights(sd, _WHAT, {"input_proj.weight": (dim, None, None, None)
                                    if np.ndim(sd["input_proj.weight"]) == 4 else (dim, None)})
    channels = sd["input_proj.weight"].shape[1] if keep_input_proj else dim
    has_enc_norm = "transformer.encoder.norm.weight" in sd
    if pre_norm is None:
        if not enc:
            raise ValueError(f"{_WHAT}: a model without encoder layers does not tell whether "
                             f"it was trained with --pre_norm: pass pre_norm=True or False")
        pre_norm = has_enc_norm
    elif enc and bool(pre_norm) != has_enc_norm:
        raise ValueError(f"{_WHAT}: pre_norm={pre_norm} but the state dict "
                         f"{'has' if has_enc_norm else 'has no'} transformer.encoder.norm "
                         f"(present exactly with --pre_norm)")
    keep_first = f"{_DEC}.0.self_attn.in_proj_weight" in sd
    keep_other = f"{_DEC}.1.self_attn.in_proj_weight" in sd if dec > 1 else keep_first
    options = dict(num_classes=int(num_classes), hidden_dim=int(dim),
                   num_encoder_layers=enc, num_decoder_layers=dec,
                   ff_dim=int(sd[f"{_DEC}.0.linear1.weight"].shape[0]),
                   keep_input_proj=keep_input_proj, keep_first_self_attn_dec=keep_first,
                   keep_other_self_attn_dec=keep_other, pre_norm=bool(pre_norm))
    return options, int(channels)


def load_query2label_state_dict(head, state_dict, allow_nonfinite=False):
    """Copy an official Query2Label state dict into the built ``head`` (checked: every
    head entry is used, every shape matches; NaN / inf weights are refused unless
    ``allow_nonfinite=True``). Returns ``head``."""
    sd = WeightLoader(strip_prefix(state_dict), _WHAT, allow_nonfinite)
    d, h = head.dim, head.num_heads
    if head.input_proj is not None:
        sd.dense(head.input_proj, "input_proj")
    for i, layer in enumerate(head.encoder_layers):
        p = f"{_ENC}.{i}"
        sd.mha(layer.self_attn, p + ".self_attn", d, h)
        for name in ("linear1", "linear2"):
            sd.dense(getattr(layer, name), f"{p}.{name}")
        for name in ("norm1", "norm2"):
            sd.layer_norm(getattr(layer, name), f"{p}.{name}")
    if head.encoder_norm is not None:
        sd.layer_norm(head.encoder_norm, "transformer.encoder.norm")
    for i, layer in enumerate(head.decoder_layers):
        p = f"{_DEC}.{i}"
        if layer.self_attention:
            sd.mha(layer.self_attn, p + ".self_attn", d, h)
            sd.layer_norm(layer.norm1, p + ".norm1")
        sd.mha(layer.cross_attn, p + ".multihead_attn", d, h)
        for name in ("linear1", "linear2"):
            sd.dense(getattr(layer, name), f"{p}.{name}")
        for name in ("norm2", "norm3"):
            sd.layer_norm(getattr(layer, name), f"{p}.{name}")
    sd.layer_norm(head.decoder_norm, "transformer.decoder.norm")
    sd.assign(head.queries, sd.get("query_embed.weight"), "query_embed.weight")
    sd.assign(head.class_kernel, sd.get("fc.W").reshape(head.num_classes, d), "fc.W")
    sd.assign(head.class_bias, sd.get("fc.b").reshape(head.num_classes), "fc.b")
    sd.check_all_used(ignore_prefixes=("backbone.",))
    return head


def convert_query2label_state_dict(state_dict, num_heads=4, pre_norm=None, dropout=0.1,
                                   temperature=10000.0, name="query2label",
                                   allow_nonfinite=False):
    """A built :class:`~keras_mld.layers.Query2LabelHead` holding the weights of an
    official Query2Label model (``{name: array}``, e.g. from
    :func:`keras_mld.convert.read_state_dict`; a ``module.`` prefix is stripped).

    The widths, layer counts and ``keep_*`` flags are read from the weights; ``num_heads``
    (official ``--nheads``, default 4) cannot be and must match the training run;
    ``pre_norm`` is read from the weights when the model has an encoder. The head takes
    the backbone's feature map ``[B, H, W, C]`` (NHWC; the official model is NCHW).
    """
    options, channels = query2label_options(state_dict, pre_norm)
    head = Query2LabelHead(num_heads=num_heads, dropout=dropout, temperature=temperature,
                                  name=name, **options)
    head.build((None, None, None, channels))
    return load_query2label_state_dict(head, state_dict, allow_nonfinite)
