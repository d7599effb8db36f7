"""A PyTorch zip checkpoint written by hand (no torch needed), for the reader's tests."""
import collections
import io
import pickle
import sys
import types
import zipfile


# ----------------------------------------------------- a PyTorch zip checkpoint, by hand
# Written the way torch.save lays it out (archive/data.pkl with persistent storage ids,
# archive/data/<key> raw little-endian storages), with stand-ins for torch's rebuild
# functions registered only while pickling.
class FakeTensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride)


class FakeParam:
    def __init__(self, tensor):
        self.tensor = tensor


class FakeStorage:
    def __init__(self, kind, key, data):
        self.kind, self.key, self.data = kind, key, data


def write_pth(path, obj, storages, monkeypatch, prefix="archive"):
    torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    def _rebuild_parameter(*args):
        raise AssertionError("never called")

    for fn in (_rebuild_tensor_v2, _rebuild_parameter):
        fn.__module__, fn.__qualname__ = "torch._utils", fn.__name__
    utils_mod._rebuild_tensor_v2, utils_mod._rebuild_parameter = (_rebuild_tensor_v2,
                                                                  _rebuild_parameter)
    kinds = {}
    for kind in ("FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "DoubleStorage",
                 "ByteStorage"):
        kinds[kind] = type(kind, (), {"__module__": "torch"})
        setattr(torch_mod, kind, kinds[kind])
    monkeypatch.setitem(sys.modules, "torch", torch_mod)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_mod)

    class P(pickle.Pickler):
        def persistent_id(self, x):
            if isinstance(x, FakeStorage):
                return ("storage", kinds[x.kind], x.key, "cpu", x.data.size)
            return None

        def reducer_override(self, x):
            if isinstance(x, FakeTensor):
                return _rebuild_tensor_v2, x.args + (False, collections.OrderedDict())
            if isinstance(x, FakeParam):
                return _rebuild_parameter, (x.tensor, True, collections.OrderedDict())
            return NotImplemented

    buf = io.BytesIO()
    P(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{prefix}/data.pkl", buf.getvalue())
        z.writestr(f"{prefix}/byteorder", "little")
        for st in storages:
            z.writestr(f"{prefix}/data/{st.key}", st.data.tobytes())
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.delitem(sys.modules, "torch._utils")
