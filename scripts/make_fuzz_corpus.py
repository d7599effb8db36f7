"""Writes the fuzz corpus ``tests/fixtures/fuzz/<surface>/``: ``seed_*`` files that load (the
starting points the fuzzers mutate) and ``bad_*`` files crafted after the hostile inputs of
issue 21, each refused with a ``ValueError`` naming it (``tests/fuzz/test_corpus.py``).

Deterministic up to zip timestamps; every file is small (the whole corpus is a few tens of KB). Run from the
repository root: ``python scripts/make_fuzz_corpus.py``.
"""
import io
import json
import pickle
import shutil
import struct
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest

sys.path.insert(0, ".")
from tests.support.fuzz import CORPUS  # noqa: E402
from tests.support.pth import FakeStorage, FakeTensor, write_pth  # noqa: E402


def _pth(folder):
    with pytest.MonkeyPatch.context() as mp:
        st = [FakeStorage("FloatStorage", "0", np.arange(6, dtype="<f4")),
              FakeStorage("LongStorage", "1", np.arange(3, dtype="<i8"))]
        write_pth(folder / "seed_small.pth", {"state_dict": {
            "w": FakeTensor(st[0], 0, (2, 3), (3, 1)), "t": FakeTensor(st[0], 1, (2, 2), (1, 3)),
            "n": FakeTensor(st[1], 0, (3,), (1,))}}, st, mp)
        one = [FakeStorage("FloatStorage", "0", np.ones(1, "<f4"))]
        write_pth(folder / "bad_stride0.pth",  # 3000 x 3000 floats from one
                  {"w": FakeTensor(one[0], 0, (3000, 3000), (0, 0))}, one, mp)
        double = FakeStorage("DoubleStorage", "0", np.zeros(8, "<f8"))
        byte = FakeStorage("ByteStorage", "0", np.zeros(8, "u1"))
        write_pth(folder / "bad_two_dtypes.pth", {"a": FakeTensor(double, 0, (8,), (1,)),
                                                  "b": FakeTensor(byte, 0, (8,), (1,))},
                  [double], mp)
        write_pth(folder / "bad_past_storage.pth",
                  {"w": FakeTensor(st[0], 4, (2, 3), (3, 1))}, st[:1], mp)
    seed = (folder / "seed_small.pth").read_bytes()
    (folder / "bad_truncated.pth").write_bytes(seed[: len(seed) // 2])
    (folder / "bad_legacy.pth").write_bytes(pickle.dumps({"w": 1}))
    with zipfile.ZipFile(folder / "bad_code.pth", "w") as z:  # os.system("true") on load
        z.writestr("archive/data.pkl", b"cos\nsystem\n(S'true'\ntR.")


def _npz(folder):
    np.savez(folder / "seed_small.npz", **{"fc.weight": np.arange(6, dtype=np.float32).reshape(
        2, 3), "fc.bias": np.ones(2, np.float16), "class_names": np.array(["a", "b"])})

    def member(name, header, payload=b""):
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, header)
        with zipfile.ZipFile(folder / name, "w") as z:
            z.writestr("w.npy", buf.getvalue() + payload)

    member("bad_huge_declared.npz", {"descr": "<f4", "fortran_order": False,
                                     "shape": (2 ** 40,)}, b"\0" * 16)
    member("bad_objects.npz", {"descr": "|O", "fortran_order": False, "shape": (1,)})
    with open(folder / "bad_npy_named.npz", "wb") as f:
        np.save(f, np.ones(3))
    seed = (folder / "seed_small.npz").read_bytes()
    (folder / "bad_truncated.npz").write_bytes(seed[: len(seed) - 40])


def _safetensors(folder):
    from safetensors.numpy import save_file

    save_file({"w": np.array([[1.5, -2.0]], ml_dtypes.bfloat16),
               "b": np.array([0.25], np.float32)}, str(folder / "seed_small.safetensors"))

    def raw(name, header, buffer=b""):
        text = header if isinstance(header, bytes) else json.dumps(header).encode()
        (folder / name).write_bytes(struct.pack("<Q", len(text)) + text + buffer)

    raw("bad_json.safetensors", b"{not json")
    raw("bad_deep.safetensors", b"[" * 10_000 + b"]" * 10_000)
    raw("bad_offsets.safetensors", {"w": {"dtype": "F32", "shape": [2 ** 40],
                                          "data_offsets": [0, 8]}}, b"\0" * 8)
    raw("bad_dtype.safetensors", {"w": {"dtype": "C64", "shape": [1],
                                        "data_offsets": [0, 8]}}, b"\0" * 8)
    (folder / "bad_header_length.safetensors").write_bytes(struct.pack("<Q", 2 ** 60) + b"{}")
    # a 70 KB header for one tensor: over 64 KiB + 4 KiB per tensor entry
    raw("bad_padded_header.safetensors",
        {"__metadata__": {"x": "y" * 70_000},
         "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)


def _coco(folder):
    good = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b/c.jpg"}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 3}],
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}
    (folder / "seed_small.json").write_text(json.dumps(good))
    (folder / "bad_infinity.json").write_text(
        '{"images": [{"id": Infinity, "file_name": "a"}], "categories": []}')
    for name, file_name in (("bad_escape.json", "../../../../etc/passwd"),
                            ("bad_absolute.json", "/etc/shadow")):
        (folder / name).write_text(json.dumps({**good, "images": [{"id": 1,
                                                                    "file_name": file_name}]}))
    (folder / "bad_annotations_strings.json").write_text(json.dumps({**good,
                                                                     "annotations": ["x"]}))
    (folder / "bad_deep.json").write_text("[" * 10_000 + "]" * 10_000)


def _csv(folder):
    (folder / "seed_small.csv").write_text("path,labels\na.jpg,cat|dog\nsub/b.jpg,dog\nc.jpg,\n")
    (folder / "bad_escape.csv").write_text("a.jpg,cat\n../../../../etc/passwd,dog\n")
    (folder / "bad_absolute.csv").write_text("/etc/shadow,cat\n")
    (folder / "bad_latin1.csv").write_bytes(b"a.jpg,caf\xe9\n")
    (folder / "bad_nul_path.csv").write_bytes(b"a\0.jpg,cat\n")
    # one new label per row (a dense matrix would be rows x classes)
    (folder / "seed_many_classes.csv").write_text(
        "".join(f"{i}.jpg,l{i}|l{(i * 7) % 300}\n" for i in range(300)))


def _recipe(folder):
    (folder / "seed_small.yaml").write_text(
        "model: {backbone: small_convnet, head: gap, input_size: 64}\n"
        "data: {batch_size: 8}\ntrain: {epochs: 1}\n")
    (folder / "bad_python_tag.yaml").write_text("model: !!python/object/apply:os.system [true]\n")
    (folder / "bad_deep.yaml").write_text("[" * 10_000)
    (folder / "bad_scanner.yaml").write_text("model: @x\n")
    (folder / "bad_control_char.yaml").write_bytes(b"a: \x07\n")


def _preset_json(folder):
    (folder / "seed_config.json").write_text(json.dumps(  # a Keras config may hold inf
        {"class_name": "ImageClassifier", "config": {"class_names": ["a"], "clip": 1e999}}))
    (folder / "bad_deep.json").write_text("[" * 20_000)
    (folder / "bad_nested.json").write_text("[" * 70 + "]" * 70)
    (folder / "bad_truncated.json").write_text('{"class_name": "ImageCla')


def _image(folder):
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (6, 7, 3), np.uint8)) for _ in range(3)]
    for fmt in ("PNG", "JPEG", "BMP"):
        frames[0].save(folder / f"seed_small.{fmt.lower()}", fmt)
    frames[0].save(folder / "seed_animated.gif", "GIF", save_all=True, append_images=frames[1:],
                   comment=b"c" * 40)
    gif = (folder / "seed_animated.gif").read_bytes()
    at = gif.index(b"\x2c\x00\x00\x00\x00")  # the first frame: declared 9000 x 7000
    (folder / "bad_gif_frame.gif").write_bytes(gif[:at + 5] + struct.pack("<HH", 9000, 7000)
                                               + gif[at + 9:])
    png = (folder / "seed_small.png").read_bytes()  # IHDR declaring 16000 x 16000
    (folder / "bad_png_dims.png").write_bytes(png[:16] + struct.pack(">II", 16000, 16000)
                                              + png[24:])
    (folder / "bad_jpeg_xl.jxl").write_bytes(b"\xff\x0a" + b"\0" * 30)
    (folder / "bad_text.txt").write_bytes(b"not an image")


def _gif(folder):
    """GIFs for the two size walks: Pillow's (with a comment), a comment of 1-byte
    sub-blocks before a 9000 x 7000 frame, and frames totalling more than max_image_pixels."""
    from PIL import Image

    frames = [Image.fromarray(np.full((6 + i, 9, 3), 50 * i, np.uint8)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], comment=b"c" * 300)
    gif = buf.getvalue()
    (folder / "seed_comment.gif").write_bytes(gif)
    head = b"GIF89a" + struct.pack("<HHBBB", 4, 4, 0, 0, 0)
    frame = struct.pack("<BHHHHB", 0x2C, 0, 0, 3, 2, 0) + b"\x02\x01\x00\x00"
    (folder / "seed_tiny_frames.gif").write_bytes(head + frame * 500 + b";")
    (folder / "bad_one_byte_sub_blocks.gif").write_bytes(
        head + b"\x21\xfe" + b"\x01x" * 20_000 + b"\0"
        + struct.pack("<BHHHHB", 0x2C, 0, 0, 9000, 7000, 0) + b"\x02\x01\x00\x00;")
    big = bytearray(gif)
    at = 0
    while True:  # every frame 5000 x 5000: 75 MP in all, a 25 MP canvas
        at = bytes(big).find(b"\x2c\x00\x00\x00\x00", at + 1)
        if at < 0:
            break
        big[at + 5:at + 9] = struct.pack("<HH", 5000, 5000)
    (folder / "bad_frames_total.gif").write_bytes(bytes(big))


def _state_json(folder):
    (folder / "seed_state.json").write_text('{"monitor": "val_loss", "values": [0.5, 0.25]}')
    (folder / "bad_nan.json").write_text('{"monitor": "val_loss", "values": [NaN]}')
    (folder / "bad_deep.json").write_text("[" * 5000 + "]" * 5000)
    (folder / "bad_values_text.json").write_text('{"values": "0.5"}')
    (folder / "bad_truncated.json").write_text('{"monitor": "val_loss", "values": [0.5,')


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    for name, make in (("pth", _pth), ("npz", _npz), ("safetensors", _safetensors),
                       ("coco", _coco), ("csv", _csv), ("recipe", _recipe),
                       ("preset_json", _preset_json), ("image", _image), ("gif", _gif),
                       ("state_json", _state_json)):
        folder = CORPUS / name
        folder.mkdir(parents=True)
        make(folder)
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    print(f"wrote {sum(1 for p in CORPUS.rglob('*') if p.is_file())} files, {total} bytes")


if __name__ == "__main__":
    main()
