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
from keras_mld.convert import tresnet as tresnet_convert
from keras_mld.convert.tresnet import _assign, read_checkpoint

PREFIX = "head.decoder."


def infer_head_config(state, prefix=PREFIX):
    """``{"num_classes", "num_groups", "embed_dim", "ff_dim", "num_layers", "in_features"}``
    of an official ML-Decoder head in ``state``."""
    need = ("embed_standart.weight", "query_embed.weight", "duplicate_pooling",
            "duplicate_pooling_bias")
    missing = [prefix + k for k in need if prefix + k not in state]
    if missing:
        raise ValueError(f"checkpoint: not an official ML-Decoder state dict, missing {missing} "
                         "(zero-shot checkpoints with word-vector queries are not supported)")
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
    num_layers = len({key[len(prefix):].split(".")[1] for key in state
                      if key.startswith(prefix + "layers.")})
    ff = state[prefix + "layers.0.linear1.weight"].shape[0]
    return {"num_classes": int(n), "num_groups": int(k), "embed_dim": int(d), "ff_dim": int(ff),
            "num_layers": int(num_layers), "in_features": int(c)}


def load_ml_decoder_weights(head, state, prefix=PREFIX):
    """Copies an official ML-Decoder head (``state[prefix + ...]``) into a built
    :class:`keras_mld.layers.MLDecoder` ``head`` of the same sizes."""
    def get(key):
        if prefix + key not in state:
            raise ValueError(f"checkpoint: missing {prefix + key!r}")
        return state[prefix + key]

    d = head.embed_dim
    h = head.num_heads
    _assign(head.embed.kernel, get("embed_standart.weight").T, prefix + "embed_standart.weight")
    _assign(head.embed.bias, get("embed_standart.bias"), prefix + "embed_standart.bias")
    _assign(head.queries.queries, get("query_embed.weight"), prefix + "query_embed.weight")
    for i, layer in enumerate(head.decoder_layers):
        p = f"layers.{i}."
        w_in, b_in = get(p + "multihead_attn.in_proj_weight"), get(p + "multihead_attn.in_proj_bias")
        att = layer.attention
        for j, dense in enumerate((att._query_dense, att._key_dense, att._value_dense)):
            w = w_in[j * d:(j + 1) * d]  # [out, in]: head m owns outputs m*d/h .. (m+1)*d/h
            _assign(dense.kernel, w.T.reshape(d, h, d // h), prefix + p + "in_proj_weight")
            _assign(dense.bias, b_in[j * d:(j + 1) * d].reshape(h, d // h), prefix + p + "in_proj_bias")
        _assign(att._output_dense.kernel, get(p + "multihead_attn.out_proj.weight").T.reshape(h, d // h, d),
                prefix + p + "out_proj.weight")
        _assign(att._output_dense.bias, get(p + "multihead_attn.out_proj.bias"), prefix + p + "out_proj.bias")
        for name in ("linear1", "linear2"):
            dense = getattr(layer, name)
            _assign(dense.kernel, get(p + name + ".weight").T, prefix + p + name + ".weight")
            _assign(dense.bias, get(p + name + ".bias"), prefix + p + name + ".bias")
        for name in ("norm1", "norm2", "norm3"):
            norm = getattr(layer, name)
            _assign(norm.gamma, get(p + name + ".weight"), prefix + p + name + ".weight")
            _assign(norm.beta, get(p + name + ".bias"), prefix + p + name + ".bias")
    _assign(head.group_dense.kernel, get("duplicate_pooling"), prefix + "duplicate_pooling")
    _assign(head.group_dense.bias, get("duplicate_pooling_bias"), prefix + "duplicate_pooling_bias")


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
                                  name=None):
    """An official ML-Decoder checkpoint -> ``(keras.Model, class_names)``.

    Args:
        source: a path (``.pth`` / ``.pt``: torch not needed, see
            :func:`keras_mld.convert.state_dict.read_pth`; ``.safetensors``, ``.npz``)
            or the loaded dict (``{"model": state_dict, "idx_to_class": ...}`` or a state
            dict).
        image_size: input side (int) or ``(H, W)`` (the official models: TResNet-M 224,
            TResNet-L 448, TResNet-XL 640); multiples of 4.
        num_heads: attention heads (not stored in the checkpoint; the official code uses 8).
        class_names: overrides the checkpoint's ``idx_to_class``.
        name: model name (default ``tresnet_mldecoder``).

    Returns:
        the :class:`~keras_mld.ImageClassifier` (input ``images`` RGB [0, 255], any size,
        resized to ``image_size`` and divided by 255 inside, output logits ``[B, N]``; its
        ``class_names`` are the checkpoint's; save it with ``model.save("x.keras")`` or
        ``model.save_to_preset(folder)``) and the N class names in logit order.
    """
    import keras_mld
    from keras_mld.tresnet import tresnet

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
    if class_names is not None:
        meta = {**meta, "class_names": list(class_names)}
    state = tresnet_convert.to_timm_layout(state)
    head_cfg = infer_head_config(state)
    cfg = tresnet_convert.infer_config(state)
    backbone = tresnet(layers=cfg["layers"], width_factor=cfg["width_factor"], v2=cfg["v2"],
                       input_shape=hw + (3,), name="tresnet")
    tresnet_convert.load_weights(backbone, state)
    if backbone.output.shape[-1] != head_cfg["in_features"]:
        raise ValueError(f"checkpoint: the backbone gives {backbone.output.shape[-1]} channels, "
                         f"the ML-Decoder embedding expects {head_cfg['in_features']}")
    names = _class_names(meta, head_cfg["num_classes"])
    model = keras_mld.build(
        backbone, head="mldecoder", num_classes=head_cfg["num_classes"], input_shape=hw + (3,),
        normalization="unit", name=name or "tresnet_mldecoder", class_names=names,
        num_groups=head_cfg["num_groups"], embed_dim=head_cfg["embed_dim"],
        ff_dim=head_cfg["ff_dim"], num_layers=head_cfg["num_layers"], num_heads=num_heads)
    load_ml_decoder_weights(model.get_layer("ml_decoder"), state)
    return model, names


def convert_checkpoint_to_files(source, out, image_size=224, num_heads=8, overwrite=False):
    """``keras-mld convert``: a checkpoint -> a preset folder or a ``.keras`` file.

    An official ML-Decoder checkpoint gives the :class:`~keras_mld.ImageClassifier` (input
    RGB [0, 255], class names inside): ``out`` a folder -> a preset
    (:meth:`~keras_mld.ImageClassifier.save_to_preset`, which ``keras-mld predict --model``,
    ``keras-mld export --model`` and ``ImageClassifier.from_preset`` read); ``out`` ending in
    ``.keras`` -> one Keras file. A timm / official TResNet state dict without ML-Decoder head
    gives the TResNet backbone (input RGB in [0, 1]; with its GAP + fc classifier when the
    state dict has ``head.fc``) as ``out`` (``.keras``) or ``out/model.keras``.

    Everything is written aside and renamed into place. Returns the path written.
    """
    import os

    out = os.fspath(out)
    if not out.endswith(".keras") and os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out: {out!r} exists and is not a folder (give a folder or a .keras path)")
    state, meta = read_checkpoint(source)
    if any(k.startswith(PREFIX) for k in state):
        model, _ = convert_ml_decoder_checkpoint({**state, **meta}, image_size=image_size,
                                                 num_heads=num_heads)
        if not out.endswith(".keras"):
            return model.save_to_preset(out, overwrite=overwrite)
        model_path = out
    else:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        cfg = tresnet_convert.infer_config(tresnet_convert.to_timm_layout(state))
        model = tresnet_convert.convert_tresnet(state, input_shape=size + (3,),
                                                include_top=cfg["num_classes"] is not None)
        model_path = out if out.endswith(".keras") else os.path.join(out, "model.keras")
    if os.path.exists(model_path) and not overwrite:
        raise ValueError(f"out: {model_path!r} exists; pass overwrite=True (--overwrite) to replace it")
    folder = os.path.dirname(os.path.abspath(model_path))
    os.makedirs(folder, exist_ok=True)
    tmp_model = os.path.join(folder, f".tmp-{os.getpid()}-" + os.path.basename(model_path))
    try:
        model.save(tmp_model)
        os.replace(tmp_model, model_path)
    finally:
        if os.path.exists(tmp_model):
            os.remove(tmp_model)
    return model_path
