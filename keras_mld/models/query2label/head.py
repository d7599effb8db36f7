"""The ``query2label`` head (Liu et al., "Query2Label: A Simple Transformer Way to Multi-Label
Classification", arXiv:2107.10834): :class:`~keras_mld.layers.Query2LabelHead`."""
from keras_mld.models.query2label.query2label import Query2LabelHead
from keras_mld.registry import register_head

# The "transformer-decoder" baseline of the ML-Decoder paper (Ridnik et al., arXiv:2111.12933,
# section 2.2 and Table 9): self-attention over the N class queries in every decoder layer
# (quadratic in N) and a projection to a narrower decoder. The official Query2Label default
# removes the decoder self-attention (linear in N).
TRANSFORMER_DECODER_BASELINE = {"keep_input_proj": True, "keep_first_self_attn_dec": True,
                                "keep_other_self_attn_dec": True}


@register_head("query2label")
def query2label_head(features, num_classes, inputs, **kwargs):
    """Query2Label (Liu et al. 2021): transformer decoder with one query per class.

    Defaults are the official model's (:class:`~keras_mld.layers.Query2LabelHead`):
    no decoder self-attention, no input projection (hidden width = backbone channels).
    The ML-Decoder paper's "transformer-decoder" baseline (self-attention in every decoder
    layer, quadratic in N): ``**TRANSFORMER_DECODER_BASELINE`` (what ``keras-mld bench``
    times); a narrower decoder: ``hidden_dim=..., keep_input_proj=True``.
    """
    return Query2LabelHead(num_classes, name="query2label", **kwargs)(features)
