"""Official ML-Decoder checkpoints (Alibaba-MIIL/ML_Decoder) -> keras-mld models.

An official checkpoint is ``{"model": state_dict, "idx_to_class": {i: name}}`` for a
TResNet (``body.*``, InPlaceABN) with the ML-Decoder head (``head.decoder.*``; Ridnik et
al., "ML-Decoder: Scalable and Versatile Classification Head", arXiv:2111.12933,
section 2.3). The head maps onto :class:`keras_mld.layers.MLDecoder`:

* ``embed_standart`` (Linear C -> D) -> ``embed`` (Dense, ReLU inside both);
* ``query_embed.weight [K, D]`` (frozen random queries) -> the non-trainable
  ``FixedQueries`` weight: loaded, never re-drawn;
* ``layers.i.multihead_attn.in_proj_weight [3D, D]`` -> the query / key / value
  projections of ``keras.layers.MultiHeadAttention`` (``[D, heads, D / heads]``),
  ``out_proj`` -> its output projection; ``linear1/2``, ``norm1/2/3`` likewise;
* ``duplicate_pooling [K, D, g]`` and ``duplicate_pooling_bias [N]`` -> ``GroupDense``
  kernel and bias (g = ceil(N / K)).

The number of attention heads is not stored in a state dict: the official code uses 8.
"""
import numpy as np

from keras_mld.checkpoints.loader import WeightLoader
from keras_mld.checkpoints.reader import errors_naming, read_checkpoint
from keras_mld.models.builder import build
from keras_mld.models.tresnet.convert import infer_config, load_weights, to_timm_layout
from keras_mld.models.tresnet.tresnet import tresnet

PREFIX = "head.decoder."


def _load_decoder_layers(loader, head, p):
    """The official ``TransformerDecoderLayerOptimal`` weights under ``{p}layers.{i}.``."""
    for i, layer in enumerate(head.decoder_layers):
        q = f"{p}layers.{i}."
        loader.mha(layer.attention, q + "multihead_attn", head.embed_dim, head.num_heads)
        for name in ("linear1", "linear2"):
            loader.dense(getattr(layer, name), q + name)
        for name in ("norm1", "norm2", "norm3"):
            loader.layer_norm(getattr(layer, name), q + name)


def infer_head_config(state, prefix=PREFIX):
    """``{"num_classes", "num_groups", "embed_dim", "ff_dim", "num_layers", "in_features"}``
    of an official ML-Decoder head in ``state``."""
    need = ("embed_standart.weight", "query_embed.weight", "duplicate_pooling",
            "duplicate_pooling_bias")
    missing = [prefix + k for k in need if prefix + k not in state]
    if missing:
        raise ValueError(f"checkpoint: not an official ML-Decoder state dict, missing {missing} "
                         "(zero-shot checkpoints with word-vector queries are not supported)")
    empty = [prefix + k for k in need if np.asarray(state[prefix + k]).size == 0]
    if empty or state[prefix + "embed_standart.weight"].ndim != 2:
        raise ValueError(f"checkpoint: {empty or [prefix + 'embed_standart.weight']} must be "
                         "non-empty weights ([D, C] for embed_standart)")
    d, c = state[prefix + "embed_standart.weight"].shape
    k = state[prefix + "query_embed.weight"].shape[0]
    pool = state[prefix + "duplicate_pooling"]
    n = state[prefix + "duplicate_pooling_bias"].shape[0]
    if pool.ndim != 3 or pool.shape[0] != k or pool.shape[1] != d:
        raise ValueError(f"checkpoint: duplicate_pooling has shape {pool.shape}, expected "
                         f"[{k}, {d}, g]")
    if pool.shape[2] != -(-n // k):
        raise ValueError(f"checkpoint: duplicate_pooling has g={pool.shape[2]} classes per group, "
                         f"keras-mld uses ceil(N/K)={-(-n // k)} for N={n}, K={k}")
    layer_ids = {key[len(prefix):].split(".")[1] for key in state
                 if key.startswith(prefix + "layers.")}
    num_layers = len(layer_ids)
    if layer_ids != {str(i) for i in range(num_layers)}:
        raise ValueError(f"checkpoint: decoder layers {sorted(layer_ids)[:8]}; expected 0..n-1")
    # every layer's sizes from real weights (the model built is bounded by the file's bytes)
    for i in range(num_layers):
        for key, rows in ((f"layers.{i}.multihead_attn.in_proj_weight", 3 * d),
                          (f"layers.{i}.linear1.weight", None)):
            w = np.asarray(state.get(prefix + key, np.zeros(0)))
            if w.ndim != 2 or w.size == 0 or w.shape[1] != d or rows not in (None, w.shape[0]):
                raise ValueError(f"checkpoint: {prefix + key} has shape {w.shape}; expected a "
                                 f"non-empty [{rows or 'ff'}, {d}] weight")
    if num_layers == 0:
        raise ValueError(f"checkpoint: no {prefix}layers.0.* decoder layer")
    ff = state[prefix + "layers.0.linear1.weight"].shape[0]
    return {"num_classes": int(n), "num_groups": int(k), "embed_dim": int(d), "ff_dim": int(ff),
            "num_layers": int(num_layers), "in_features": int(c)}


def load_ml_decoder_weights(head, state, prefix=PREFIX, allow_nonfinite=False):
    """Copies an official ML-Decoder head (``state[prefix + ...]``) into a built
    :class:`keras_mld.layers.MLDecoder` ``head`` of the same sizes; every head entry must be
    used; NaN / inf weights are refused unless ``allow_nonfinite=True``."""
    loader = WeightLoader(state, "checkpoint", allow_nonfinite)
    p = prefix
    loader.dense(head.embed, p + "embed_standart")
    loader.assign(head.queries.queries, loader.get(p + "query_embed.weight"),
                  p + "query_embed.weight")
    _load_decoder_layers(loader, head, p)
    loader.assign(head.group_dense.kernel, loader.get(p + "duplicate_pooling"),
                  p + "duplicate_pooling")
    loader.assign(head.group_dense.bias, loader.get(p + "duplicate_pooling_bias"),
                  p + "duplicate_pooling_bias")
    loader.check_all_used(within=(p,))


def load_zsl_ml_decoder_weights(head, state, prefix="head.", allow_nonfinite=False):
    """Copies an official zero-shot ML-Decoder head (``MLDecoder(..., zsl=1)``, full
    decoding: ``train_zsl_nus.py``) into a built :class:`keras_mld.layers.ZSLMLDecoder`
    ``head`` with ``group_size=1`` of the same sizes. ``state[prefix + ...]``:

    * ``wordvec_proj`` (Linear d_w -> D, ReLU after it) -> ``word_queries.projection``
      (``nn.Identity`` when D = d_w = 300 has no weights: not supported here);
    * ``decoder.embed_standart`` and ``decoder.layers.i.*`` as :func:`load_ml_decoder_weights`;
    * ``decoder.duplicate_pooling [D, 1]`` and ``decoder.duplicate_pooling_bias [1]`` -> the
      shared ``group_dense`` kernel ``[D]`` and scalar bias.

    The word vectors are no weights in the official model (``update_wordvecs`` sets them):
    set them with ``head.set_label_vectors`` (or pass ``label_vectors``). Every head entry
    must be used; NaN / inf weights are refused unless ``allow_nonfinite=True``."""
    if getattr(head, "group_size", None) != 1:
        raise ValueError("head: expected a ZSLMLDecoder with group_size=1 (the official "
                         "zero-shot head decodes one query per label)")
    loader = WeightLoader(state, "checkpoint", allow_nonfinite)
    p = prefix + "decoder."
    loader.dense(head.word_queries.projection, prefix + "wordvec_proj")
    loader.dense(head.embed, p + "embed_standart")
    _load_decoder_layers(loader, head, p)
    pool = loader.get(p + "duplicate_pooling")
    if pool.ndim != 2 or pool.shape[1] != 1:
        raise ValueError(f"checkpoint: {p}duplicate_pooling has shape {pool.shape}; the "
                         f"zero-shot head's is [D, 1]")
    loader.assign(head.group_dense.kernel, pool[:, 0], p + "duplicate_pooling")
    bias = np.asarray(loader.get(p + "duplicate_pooling_bias"))
    if bias.size != 1:
        raise ValueError(f"checkpoint: {p}duplicate_pooling_bias has shape {bias.shape}; the "
                         f"zero-shot head's is [1]")
    loader.assign(head.group_dense.bias, bias.reshape(()),
                  p + "duplicate_pooling_bias")
    loader.check_all_used(within=(prefix + "wordvec_proj", p))


def _class_names(meta, n):
    if "class_names" in meta:
        names = list(meta["class_names"])
    elif "idx_to_class" in meta:
        idx = meta["idx_to_class"]
        try:
            names = [str(idx[i]) for i in sorted(idx, key=int)]
        except (TypeError, ValueError, AttributeError):
            raise ValueError("checkpoint: idx_to_class must map class indices to names") from None
    else:
        names = [f"class_{i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"checkpoint: {len(names)} class names for {n} logits")
    return names


def convert_ml_decoder_checkpoint(source, image_size=224, num_heads=8, class_names=None,
                                  name=None, allow_nonfinite=False):
    """An official ML-Decoder checkpoint -> ``(keras.Model, class_names)``.

    Args:
        source: a path (``.pth`` / ``.pt``: torch not needed, see
            :func:`keras_mld.checkpoints.reader.read_checkpoint`; ``.safetensors``, ``.npz``)
            or the loaded dict (``{"model": state_dict, "idx_to_class": ...}`` or a state
            dict).
        image_size: input side (int) or ``(H, W)`` (the official models: TResNet-M 224,
            TResNet-L 448, TResNet-XL 640); multiples of 4.
        num_heads: attention heads (not stored in the checkpoint; the official code uses 8).
        class_names: overrides the checkpoint's ``idx_to_class``.
        name: model name (default ``tresnet_mldecoder``).
        allow_nonfinite: accept NaN / inf weights and negative BatchNorm variances (refused
            by default, with the key named).

    Returns:
        the :class:`~keras_mld.ImageClassifier` (input ``images`` RGB [0, 255], any size,
        resized to ``image_size`` and divided by 255 inside, output logits ``[B, N]``; its
        ``class_names`` are the checkpoint's; save it with ``model.save("x.keras")`` or
        ``model.save_to_preset(folder)``) and the N class names in logit order.
    """
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        hw = (image_size, image_size)
    else:
        try:
            hw = tuple(int(s) for s in image_size)
        except (TypeError, ValueError):
            hw = ()
    if len(hw) != 2 or any(s < 32 or s % 4 for s in hw):
        raise ValueError(f"image_size: expected an int or (H, W), multiples of 4 and >= 32, "
                         f"got {image_size!r}")
    state, meta = read_checkpoint(source)
    with errors_naming(source):
        if class_names is not None:
            meta = {**meta, "class_names": list(class_names)}
        state = to_timm_layout(state)
        head_cfg = infer_head_config(state)
        cfg = infer_config(state)
        backbone = tresnet(layers=cfg["layers"], width_factor=cfg["width_factor"], v2=cfg["v2"],
                           input_shape=hw + (3,), name="tresnet")
        load_weights(backbone, state, allow_nonfinite=allow_nonfinite)
        if backbone.output.shape[-1] != head_cfg["in_features"]:
            raise ValueError(f"checkpoint: the backbone gives {backbone.output.shape[-1]} "
                             f"channels, the ML-Decoder embedding expects "
                             f"{head_cfg['in_features']}")
        names = _class_names(meta, head_cfg["num_classes"])
        model = build(
            backbone, head="mldecoder", num_classes=head_cfg["num_classes"], input_shape=hw + (3,),
            normalization="unit", name=name or "tresnet_mldecoder", class_names=names,
            num_groups=head_cfg["num_groups"], embed_dim=head_cfg["embed_dim"],
            ff_dim=head_cfg["ff_dim"], num_layers=head_cfg["num_layers"], num_heads=num_heads)
        load_ml_decoder_weights(model.get_layer("ml_decoder"), state,
                                allow_nonfinite=allow_nonfinite)
    return model, names
