"""Damaged and hostile checkpoint files: every refusal is a ValueError naming the file, at a
cost bounded by what the file holds; bfloat16 / float8 safetensors load as float32."""
import io
import json
import struct
import zipfile

import ml_dtypes
import numpy as np
import pytest

from keras_mld.convert import read_checkpoint, read_state_dict, strip_prefix
from tests.support.pth import FakeStorage, FakeTensor, write_pth


def _refused(path, match="", **kwargs):
    with pytest.raises(ValueError, match=f"cannot read checkpoint '{path}'.*{match}"):
        read_state_dict(path, use_torch=False, **kwargs)


def _good_pth(path, monkeypatch):
    st = [FakeStorage("FloatStorage", "0", np.arange(6, dtype="<f4"))]
    write_pth(path, {"w": FakeTensor(st[0], 0, (2, 3), (3, 1))}, st, monkeypatch)
    return path.read_bytes()


def test_damaged_pth_zips_are_value_errors(tmp_path, monkeypatch):
    data = _good_pth(tmp_path / "good.pth", monkeypatch)
    for i, cut in enumerate((len(data) // 2, len(data) - 30, 40)):
        path = tmp_path / f"cut{i}.pth"
        path.write_bytes(data[:cut])
        _refused(str(path))
    # data.pkl's bytes flipped inside a valid zip (bad CRC), and a deflated member cut short
    pkl_at = data.index(b"\x80\x02")
    flipped = tmp_path / "flipped.pth"
    flipped.write_bytes(data[:pkl_at + 5] + b"\xff\xff" + data[pkl_at + 7:])
    _refused(str(flipped))
    deflated = tmp_path / "deflated.pth"
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00." * 50)
    raw = bytearray(deflated.read_bytes())
    raw[40:60] = b"\x00" * 20
    deflated.write_bytes(bytes(raw))
    _refused(str(deflated))


def test_one_storage_key_keeps_one_dtype(tmp_path, monkeypatch):
    # the same key as DoubleStorage and ByteStorage: the byte budget would count 1-byte items
    # of a storage cached as float64
    double = FakeStorage("DoubleStorage", "0", np.zeros(8, "<f8"))
    byte = FakeStorage("ByteStorage", "0", np.zeros(8, "u1"))
    path = tmp_path / "two_dtypes.pth"
    write_pth(path, {"a": FakeTensor(double, 0, (8,), (1,)), "b": FakeTensor(byte, 0, (8,), (1,))},
              [double], monkeypatch)
    _refused(str(path), "keeps one dtype")


def _npz_with_member(path, name, header, payload=b""):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(name, buf.getvalue() + payload)


def test_npz_declared_sizes_are_checked_before_allocating(tmp_path):
    huge = tmp_path / "huge.npz"  # 2**40 float32 declared, 16 bytes held
    _npz_with_member(huge, "w.npy", {"descr": "<f4", "fortran_order": False,
                                     "shape": (2 ** 40,)}, b"\x00" * 16)
    _refused(str(huge), r"declares \(1099511627776,\)")
    objects = tmp_path / "objects.npz"
    _npz_with_member(objects, "w.npy", {"descr": "|O", "fortran_order": False, "shape": (1,)})
    _refused(str(objects), "Python objects")
    npy = tmp_path / "array.npz"  # a .npy named .npz
    with open(npy, "wb") as f:
        np.save(f, np.ones(3))
    _refused(str(npy), "not an .npz")
    garbage = tmp_path / "header.npz"
    with zipfile.ZipFile(garbage, "w") as z:
        z.writestr("w.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': <<<}\n")
    _refused(str(garbage), "w.npy")


def _safetensors(path, header, buffer=b""):
    raw = json.dumps(header).encode() if isinstance(header, (dict, list)) else header
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + buffer)


@pytest.mark.parametrize("header, buffer, why", [
    (b"{not json", b"", "not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, b"", "200000 bytes for 0 tensor entries"),
    (b"[" * 30_000 + b"]" * 30_000, b"", "not JSON"),
    (b"[" * 65 + b"]" * 65, b"", "not JSON.*nested more than 64"),
    ([1, 2], b"", "not a JSON object"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\x00" * 8, "offsets"),
    ({"w": {"dtype": "F32", "shape": [2 ** 40], "data_offsets": [0, 8]}}, b"\x00" * 8,
     "offsets"),
    ({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\x00" * 8, "dtype"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\x00" * 4, "shape"),
    ({"w": "F32"}, b"", "expected"),
])
def test_damaged_safetensors_headers(tmp_path, header, buffer, why):
    path = tmp_path / "bad.safetensors"
    _safetensors(path, header, buffer)
    _refused(str(path), why)
    short = tmp_path / "short.safetensors"
    short.write_bytes(struct.pack("<Q", 2 ** 60) + b"{}")
    _refused(str(short), "header length")


def test_bfloat16_and_float8_safetensors_load_as_float32(tmp_path):
    from safetensors.numpy import save_file

    values = np.array([[1.5, -2.0, 0.25], [3.0, 0.0, -0.5]], np.float32)
    path = tmp_path / "low.safetensors"
    save_file({"bf16": values.astype(ml_dtypes.bfloat16),
               "e4m3": values.astype(ml_dtypes.float8_e4m3fn),
               "e5m2": values.astype(ml_dtypes.float8_e5m2),
               "i64": np.arange(3, dtype=np.int64)}, str(path))
    out = read_state_dict(path)
    for key in ("bf16", "e4m3", "e5m2"):  # values exactly representable in all three formats
        assert out[key].dtype == np.float32
        np.testing.assert_array_equal(out[key], values)
    assert out["i64"].dtype == np.int64 and out["i64"].tolist() == [0, 1, 2]


def test_non_string_keys_are_refused():
    with pytest.raises(ValueError, match="key 3 is a int"):
        read_checkpoint({3: np.ones(2)})
    with pytest.raises(ValueError, match="key 3 is a int"):
        strip_prefix({3: np.ones(2)})


def test_zip_bombs_are_refused_from_their_declared_sizes(tmp_path):
    # 40 MB of zeros deflate to ~40 KB: refused before anything is inflated
    bomb = tmp_path / "bomb.npz"
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(10 * 2 ** 20, np.float32))
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("w.npy", buf.getvalue())
    assert bomb.stat().st_size < 100_000
    _refused(str(bomb), "inflate to .* a zip bomb")


def test_views_copied_out_of_torch_are_bounded_too(tmp_path, monkeypatch):
    # with torch installed, torch.load keeps a stride-0 view as a view; copying it out is
    # bounded as in the built-in reader (a stand-in torch: only what the reader calls)
    import sys
    import types

    class Tensor:
        dtype = "float32"

        def __init__(self, array):
            self.array = array

        def numel(self):
            return self.array.size

        def element_size(self):
            return self.array.itemsize

        def detach(self):
            return self

        def numpy(self):
            return self.array

    wide = np.broadcast_to(np.float32(1), (3000, 3000))  # a stride-0 view, as torch keeps it
    fake = types.SimpleNamespace(Tensor=Tensor, bfloat16="bfloat16", load=None)
    monkeypatch.setitem(sys.modules, "torch", fake)
    path = tmp_path / "view.pth"
    path.write_bytes(b"\0" * 600)
    fake.load = lambda *a, **k: {"w": Tensor(wide)}
    with pytest.raises(ValueError, match=f"'{path}'.*materialise more than 2400 bytes"):
        read_state_dict(path, use_torch=True)
    fake.load = lambda *a, **k: {"w": Tensor(np.arange(6, dtype=np.float32))}
    np.testing.assert_array_equal(read_state_dict(path, use_torch=True)["w"], np.arange(6))


def test_safetensors_header_bounded_by_its_tensors(tmp_path):
    """A header may hold 64 KiB + 4 KiB per tensor entry (never over 16 MiB): a 1 MB
    header padded with metadata around one tensor is refused before it is parsed; a real
    file of 300 tensors written by the safetensors package loads."""
    from safetensors.numpy import save_file

    w = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    padded = tmp_path / "padded.safetensors"
    _safetensors(padded, {"__metadata__": {"x": "y" * 2 ** 20}, "w": w}, b"\0" * 4)
    _refused(str(padded), r"header of \d+ bytes for 1 tensor entries")
    small = tmp_path / "small.safetensors"  # the same with a 60 KB comment: accepted
    _safetensors(small, {"__metadata__": {"x": "y" * 60_000}, "w": w}, b"\0" * 4)
    assert set(read_state_dict(str(small))) == {"w"}
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 17 * 2 ** 20) + b" " * (17 * 2 ** 20))
    _refused(str(huge), "header length 17825792 is over 16777216")
    meta = tmp_path / "meta.safetensors"
    _safetensors(meta, {"__metadata__": {"x": [1]}, "w": w}, b"\0" * 4)
    _refused(str(meta), "__metadata__ must map strings to strings")
    many = {f"block.{i}.weight": np.full((2, 3), i, np.float32) for i in range(300)}
    save_file(many, str(tmp_path / "many.safetensors"))
    loaded = read_state_dict(str(tmp_path / "many.safetensors"))
    assert len(loaded) == 300
    np.testing.assert_array_equal(loaded["block.7.weight"], many["block.7.weight"])
