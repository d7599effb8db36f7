"""The checkpoint reader (read_state_dict, read_checkpoint): .pth without torch (restricted
unpickler), .safetensors, .npz."""
import collections
import os
import pickle
import zipfile

import numpy as np
import pytest

from keras_mld.convert import read_state_dict, strip_prefix
from tests.support.pth import FakeParam, FakeStorage, FakeTensor, write_pth


def test_pth_without_torch_dtypes_views_and_checkpoint_wrapper(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    f32 = rng.normal(size=16).astype("<f4")
    f16 = rng.normal(size=6).astype("<f2")
    bf_src = rng.normal(size=4).astype(np.float32)
    bf16 = (bf_src.view(np.uint32) >> 16).astype("<u2")  # truncated bfloat16 bits
    i64 = np.arange(5, dtype="<i8")
    st = [FakeStorage("FloatStorage", "0", f32), FakeStorage("HalfStorage", "1", f16),
          FakeStorage("BFloat16Storage", "2", bf16), FakeStorage("LongStorage", "3", i64)]
    sd = collections.OrderedDict([
        ("module.w", FakeTensor(st[0], 0, (4, 4), (4, 1))),
        ("module.col", FakeTensor(st[0], 1, (4,), (4,))),  # a strided view: column 1
        ("module.p", FakeParam(FakeTensor(st[1], 2, (2, 2), (2, 1)))),
        ("module.bf", FakeTensor(st[2], 0, (4,), (1,))),
        ("module.i", FakeTensor(st[3], 0, (5,), (1,))),
    ])
    path = tmp_path / "ckpt.pth"
    write_pth(path, {"state_dict": sd, "epoch": 3, "best": 0.5}, st, monkeypatch)
    out = strip_prefix(read_state_dict(path, use_torch=False))
    assert sorted(out) == ["bf", "col", "i", "p", "w"]
    np.testing.assert_array_equal(out["w"], f32.reshape(4, 4))
    np.testing.assert_array_equal(out["col"], f32.reshape(4, 4)[:, 1])
    np.testing.assert_array_equal(out["p"], f16[2:6].reshape(2, 2))
    assert out["p"].dtype == np.float16 and out["i"].dtype == np.int64
    np.testing.assert_array_equal(out["bf"], (bf16.astype(np.uint32) << 16).view(np.float32))
    np.testing.assert_allclose(out["bf"], bf_src, rtol=1e-2)
    np.testing.assert_array_equal(out["i"], i64)


def test_pth_view_past_its_storage_is_refused(tmp_path, monkeypatch):
    st = FakeStorage("FloatStorage", "0", np.zeros(4, "<f4"))
    path = tmp_path / "bad.pth"
    write_pth(path, {"w": FakeTensor(st, 2, (2, 2), (2, 1))}, [st], monkeypatch)
    with pytest.raises(ValueError, match="runs past its storage"):
        read_state_dict(path, use_torch=False)


def test_pth_with_code_is_refused(tmp_path):
    """A pickle naming any other global (here os.system) is never resolved."""
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": os.system}, protocol=2))
    with pytest.raises(ValueError, match="not allowed"):
        read_state_dict(path, use_torch=False)


def test_bad_files(tmp_path):
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(ValueError, match="zip"):
        read_state_dict(legacy, use_torch=False)
    with pytest.raises(ValueError, match="no such file"):
        read_state_dict(tmp_path / "missing.pth")
    other = tmp_path / "w.h5"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match=".safetensors or .npz"):
        read_state_dict(other)
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros(3))
    with pytest.raises(ValueError, match="max_bytes"):
        read_state_dict(empty, max_bytes=10)


def test_npz_and_safetensors(tmp_path):
    from safetensors.numpy import save_file

    arrays = {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
              "a.bias": np.ones(2, np.float16)}
    np.savez(tmp_path / "w.npz", **arrays)
    save_file(arrays, str(tmp_path / "w.safetensors"))
    for name in ("w.npz", "w.safetensors"):
        out = read_state_dict(tmp_path / name)
        assert sorted(out) == sorted(arrays)
        for k, v in arrays.items():
            np.testing.assert_array_equal(out[k], v)
            assert out[k].dtype == v.dtype


def test_pth_views_cannot_claim_more_memory_than_the_file_holds(tmp_path, monkeypatch):
    # a stride-0 view of one float claims 3000 x 3000 floats (36 MB) from a tiny file: over
    # max_bytes, and over 4 x the file's content even with the default max_bytes
    st = [FakeStorage("FloatStorage", "0", np.ones(1, "<f4"))]
    path = tmp_path / "wide.pth"
    write_pth(path, {"w": FakeTensor(st[0], 0, (3000, 3000), (0, 0))}, st, monkeypatch)
    with pytest.raises(ValueError, match="max_bytes=1048576"):
        read_state_dict(path, use_torch=False, max_bytes=2 ** 20)
    with pytest.raises(ValueError, match=r"wide\.pth.*stride-0 or overlapping"):
        read_state_dict(path, use_torch=False)
    small = tmp_path / "small.pth"  # a small broadcast view stays within 4 x the file
    write_pth(small, {"w": FakeTensor(st[0], 0, (4, 5), (0, 0))}, st, monkeypatch)
    np.testing.assert_array_equal(read_state_dict(small, use_torch=False)["w"], np.ones((4, 5)))


def test_pth_shared_and_cyclic_containers(tmp_path, monkeypatch):
    # one dict shared 2 x 2 x ... 40 levels deep is read once per object (not 2**40 paths);
    # a dict that contains itself is refused with a ValueError
    st = [FakeStorage("FloatStorage", "0", np.arange(3, dtype="<f4"))]
    node = {"t": FakeTensor(st[0], 0, (3,), (1,))}
    for _ in range(40):
        node = {"a": node, "b": node}
    path = tmp_path / "shared.pth"
    write_pth(path, {"state_dict": {"x": FakeTensor(st[0], 0, (3,), (1,))}, "tree": node},
               st, monkeypatch)
    np.testing.assert_array_equal(read_state_dict(path, use_torch=False)["x"], [0, 1, 2])
    cyclic = tmp_path / "cyclic.pth"
    loop = {}
    loop["self"] = loop
    write_pth(cyclic, {"w": FakeTensor(st[0], 0, (3,), (1,)), "loop": loop}, st, monkeypatch)
    with pytest.raises(ValueError, match="contains itself"):
        read_state_dict(cyclic, use_torch=False)
