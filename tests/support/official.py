"""The official-code fixtures (``tests/fixtures/*.npz``, written by the scripts in
``scripts/``) and the comparisons every parity test makes with them."""
import json
import pathlib

import keras
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
RTOL = 1e-4  # relative to the largest official logit


def load_head_fixture(name):
    """A Query2Label / C-Tran fixture: ``(state_dict, config, arrays)``."""
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as z:
        sd = {k[3:]: z[k] for k in z.files if k.startswith("sd/")}
        rest = {k: z[k] for k in z.files if not k.startswith("sd/")}
    return sd, json.loads(str(rest.pop("config"))), rest


def load_tresnet_fixture(name):
    """A TResNet / ML-Decoder fixture: ``(arrays, state_dict)``."""
    with np.load(FIXTURES / f"tresnet_{name}.npz") as z:
        data = {k: z[k] for k in z.files}
    state = {k[len("param/"):]: v for k, v in data.items() if k.startswith("param/")}
    return data, state


def compiled(layer):
    """``layer(x, **kw)`` in inference mode; on JAX one jitted ``stateless_call``."""
    if keras.backend.backend() != "jax":
        return lambda *a, **kw: layer(*a, training=False, **kw)
    import jax

    fn = jax.jit(lambda tv, ntv, a, kw: layer.stateless_call(tv, ntv, *a, training=False,
                                                             **kw)[0])
    return lambda *a, **kw: fn([v.value for v in layer.trainable_variables],
                               [v.value for v in layer.non_trainable_variables], a, kw)


def assert_official(out, ref, label):
    """``out`` equals the official ``ref`` within :data:`RTOL` of ``max |ref|``; prints the
    difference with the backend's name (the JAX run greps for it)."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    scale = np.abs(ref).max()
    diff = np.abs(out - ref).max()
    print(f"{label} [{keras.backend.backend()}]: max |keras - official| = {diff:.2e} "
          f"(max |official| = {scale:.2f})")
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=RTOL * scale, err_msg=label)


def assert_relative(out, ref):
    """max |out - ref| <= :data:`RTOL` * max |ref| (the TResNet / ML-Decoder fixtures)."""
    err = np.max(np.abs(np.asarray(out, "float64") - ref)) / np.max(np.abs(ref))
    assert err <= RTOL, f"relative error {err:.2e} > {RTOL}"
