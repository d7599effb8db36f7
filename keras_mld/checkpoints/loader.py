"""The one weight loader of every converter: PyTorch state-dict entries into Keras variables,
checked by name and shape, with the layout conversions (``Linear``, ``Conv2d``,
``BatchNorm2d``, ``LayerNorm``, ``MultiheadAttention``) written once. Only public Keras
attributes are used (``kernel``, ``bias``, ``gamma``, ``moving_mean``, the attention's
``query_dense`` ... ``output_dense``)."""
import re

import numpy as np


class WeightLoader:
    """Assigns ``state_dict`` entries to Keras variables, checking names and shapes, and
    remembers which entries were used (:meth:`check_all_used`)."""

    def __init__(self, state_dict, what, allow_nonfinite=False):
        """``state_dict``: ``{name: array}``; ``what``: the caller, named in every error;
        ``allow_nonfinite``: accept NaN / inf weights and negative BatchNorm variances (by
        default they are refused with the key named: the model would output NaN)."""
        if not isinstance(allow_nonfinite, bool):
            raise ValueError(f"allow_nonfinite: expected True or False, got {allow_nonfinite!r}")
        bad = [k for k in state_dict if not isinstance(k, str)]
        if bad:
            raise ValueError(f"{what}: state_dict key {bad[0]!r} is a {type(bad[0]).__name__}, "
                             "expected a str (a parameter name)")
        self.sd = {k: np.asarray(v) for k, v in state_dict.items()}
        self.what = what
        self.allow_nonfinite = allow_nonfinite
        self.used = set()

    def has(self, key):
        return key in self.sd

    def get(self, key):
        if key not in self.sd:
            raise ValueError(f"{self.what}: state_dict has no entry {key!r} (is it a state "
                             f"dict of the official model with these options?)")
        value = self.sd[key]
        if value.size == 0:
            raise ValueError(f"{self.what}: {key!r} is empty (shape {value.shape}); expected a "
                             "weight")
        if (not self.allow_nonfinite and value.dtype.kind in "fc"
                and not np.isfinite(value).all()):
            raise ValueError(f"{self.what}: {key!r} holds {int((~np.isfinite(value)).sum())} "
                             "non-finite values (NaN / inf); pass allow_nonfinite=True to "
                             "accept them")
        self.used.add(key)
        return value

    def assign(self, variable, value, key):
        value = np.asarray(value)
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"{self.what}: {key!r} has shape {value.shape} after conversion, "
                             f"the Keras weight {variable.path} has {tuple(variable.shape)}")
        variable.assign(value.astype(variable.dtype))

    def conv2d(self, conv, key):
        """torch ``Conv2d`` ``weight [O, I, kh, kw]`` (and ``bias``) -> Keras ``Conv2D``
        ``kernel [kh, kw, I, O]``."""
        self.assign(conv.kernel, self.get(key + ".weight").transpose(2, 3, 1, 0), key + ".weight")
        if conv.use_bias:
            self.assign(conv.bias, self.get(key + ".bias"), key + ".bias")

    def batch_norm(self, norm, key):
        """torch ``BatchNorm2d`` (``weight``, ``bias``, ``running_mean``, ``running_var``)."""
        for variable, suffix in ((norm.gamma, "weight"), (norm.beta, "bias"),
                                 (norm.moving_mean, "running_mean"),
                                 (norm.moving_variance, "running_var")):
            value = self.get(f"{key}.{suffix}")
            if suffix == "running_var" and not self.allow_nonfinite and (value < 0).any():
                raise ValueError(f"{self.what}: {key}.running_var holds {int((value < 0).sum())}"
                                 " negative variances (the normalisation would give NaN); pass "
                                 "allow_nonfinite=True to accept them")
            self.assign(variable, value, f"{key}.{suffix}")

    def dense(self, dense, key):
        """torch Linear ``weight [out, in]`` (or 1x1 Conv2d ``[out, in, 1, 1]``) -> Dense."""
        w = self.get(key + ".weight")
        if w.ndim == 4:
            w = w.reshape(w.shape[0], w.shape[1])
        self.assign(dense.kernel, w.T, key + ".weight")
        self.assign(dense.bias, self.get(key + ".bias"), key + ".bias")

    def layer_norm(self, norm, key):
        self.assign(norm.gamma, self.get(key + ".weight"), key + ".weight")
        self.assign(norm.beta, self.get(key + ".bias"), key + ".bias")

    def mha(self, mha, key, dim, num_heads):
        """``torch.nn.MultiheadAttention`` (packed ``in_proj``) -> Keras ``MultiHeadAttention``.

        torch: ``q = x W_q^T + b_q`` split into heads as ``[heads, dim / heads]``, output
        ``concat_heads W_o^T + b_o``; Keras: kernels ``[dim, heads, dim / heads]`` and
        ``[heads, dim / heads, dim]``. Both scale the scores by ``1 / sqrt(dim / heads)``.
        """
        hd = dim // num_heads
        w = self.get(key + ".in_proj_weight")
        b = self.get(key + ".in_proj_bias")
        if w.shape != (3 * dim, dim) or b.shape != (3 * dim,):
            raise ValueError(f"{self.what}: {key}.in_proj_weight/bias have shapes {w.shape}, "
                             f"{b.shape}; expected ({3 * dim}, {dim}), ({3 * dim},)")
        for i, dense in enumerate((mha.query_dense, mha.key_dense, mha.value_dense)):
            rows = slice(i * dim, (i + 1) * dim)
            self.assign(dense.kernel, w[rows].T.reshape(dim, num_heads, hd), key)
            self.assign(dense.bias, b[rows].reshape(num_heads, hd), key)
        wo = self.get(key + ".out_proj.weight")
        self.assign(mha.output_dense.kernel, wo.T.reshape(num_heads, hd, dim),
                    key + ".out_proj.weight")
        self.assign(mha.output_dense.bias, self.get(key + ".out_proj.bias"),
                    key + ".out_proj.bias")

    def check_all_used(self, ignore_prefixes=(), within=None):
        """Raises when an entry was not assigned: every entry, or those starting with one of
        ``within``; entries starting with one of ``ignore_prefixes`` never count."""
        left = sorted(k for k in self.sd if k not in self.used
                      and not any(k.startswith(p) for p in ignore_prefixes)
                      and (within is None or any(k.startswith(p) for p in within)))
        if left:
            raise ValueError(f"{self.what}: {len(left)} state_dict entries were not used by "
                             f"the Keras model (a different variant, or options that differ "
                             f"from the official model's?): {left[:8]}"
                             f"{' ...' if len(left) > 8 else ''}")


def layer_count(state_dict, prefix):
    """Number of ``prefix.<i>.`` blocks (``max i + 1``; 0 if none)."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    found = [int(m.group(1)) for k in state_dict for m in [pattern.match(k)] if m]
    return max(found) + 1 if found else 0


def require_weights(state_dict, what, shapes):
    """Checks, before a model is built from sizes read off ``state_dict``, that each
    ``{key: shape}`` entry is present, non-empty and of that shape (``None`` dims: any), so
    the model built is never larger than a small multiple of the weights in the file (an
    empty array cannot declare a 100,000-wide layer, nor a layer index a missing layer)."""
    for key, shape in shapes.items():
        value = state_dict.get(key)
        if value is None:
            raise ValueError(f"{what}: state_dict has no entry {key!r}")
        got = np.shape(value)
        if (np.size(value) == 0 or len(got) != len(shape)
                or any(s is not None and s != g for s, g in zip(shape, got))):
            want = ", ".join("n" if s is None else str(s) for s in shape)
            raise ValueError(f"{what}: {key!r} has shape {got}; expected a non-empty "
                             f"[{want}] weight")
