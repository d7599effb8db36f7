"""Serving under load: one exported SavedModel, concurrent clients, hostile input mixed in.

    python benchmarks/serving_load.py --backbone efficientnetv2_s --size 224 \
        --clients 1 2 4 8 --requests 50

The driver (this process: Keras) builds ``backbone`` + ML-Decoder (``weights=None``),
exports it with ``keras_mld.export.export_saved_model`` and writes a request mix: JPEG and
PNG batches of 1-3 images of various sizes, garbage (random bytes, a truncated PNG, a JPEG
signature followed by junk), decompression bombs (a 774 KB PNG of 16,000 x 16,000 pixels;
a JPEG whose header says 12,000 x 12,000) and a request over ``max_batch_size``. Then for
each client count a *fresh process that can import only TensorFlow* (``serve`` mode below:
keras, keras_mld and friends are blocked before ``import tensorflow``) loads the SavedModel,
answers every distinct request once on its own (the single-request reference) and then
serves ``clients`` threads that each send ``requests`` requests (request ``i`` of client
``c`` is the mix's ``(7 c + i) mod len``), all against the one loaded ``predict_images``
signature, as TF Serving's request threads would. It checks that every good request gets
exactly the single-request scores and every bad one an ``InvalidArgumentError`` (the same
message as alone), that the process lives to write its report, and samples the resident
set size (``/proc/self/statm``, every 20 ms) besides the process's peak (``VmHWM``).

Throughput is images of good requests per second of the load phase's wall time.
``tests/export/test_load.py`` runs the ``serve`` mode on a tiny model (4 clients x 10).
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCKED = ("keras", "keras_mld", "tf_keras", "tensorflow_text", "keras_hub", "keras_cv")


# ------------------------------------------------------------------- child: serve (TF only)
def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes():
    """This process's peak RSS (``VmHWM``). Not ``ru_maxrss``: Linux carries that over
    ``fork`` + ``execve``, so a child started by a big parent (pytest with Keras loaded)
    starts at the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def serve(job_path):
    """Runs in a fresh process: loads the SavedModel with TensorFlow alone and serves the job."""
    for name in BLOCKED:
        sys.modules[name] = None
    import resource
    import threading

    import numpy as np
    import tensorflow as tf

    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    requests = [[base64.b64decode(b) for b in r] for r in job["requests"]]
    rss = {"after_import": _rss_bytes()}
    fn = tf.saved_model.load(job["export_dir"]).signatures["predict_images"]
    rss["after_load"] = _rss_bytes()

    def call(i):
        try:
            out = fn(image_bytes=tf.constant(requests[i], tf.string))
            return {"scores": out["scores"].numpy()}
        except tf.errors.InvalidArgumentError as e:
            return {"error": "InvalidArgumentError", "message": e.message.strip()}
        except Exception as e:  # anything else is a failure the report shows
            return {"error": type(e).__name__, "message": str(e)[:500]}

    single = [call(i) for i in range(len(requests))]
    rss["after_single"] = _rss_bytes()
    report = {"single": [{"error": s.get("error"), "message": s.get("message"),
                          "scores": s["scores"].tolist() if "scores" in s else None}
                         for s in single], "runs": []}
    for clients in job["clients"]:
        peak, stop = [_rss_bytes()], threading.Event()

        def sample():
            while not stop.wait(0.02):
                peak[0] = max(peak[0], _rss_bytes())

        results = [[] for _ in range(clients)]

        def client(c):
            for r in range(job["requests_per_client"]):
                i = (7 * c + r) % len(requests)
                results[c].append((i, call(i)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        stop.set()
        sampler.join()
        mismatched, wrong_errors, good_images, good, bad = [], [], 0, 0, 0
        for c, items in enumerate(results):
            for i, out in items:
                ref = single[i]
                if "scores" in ref:
                    good += 1
                    good_images += len(requests[i])
                    if "scores" not in out or not np.array_equal(out["scores"], ref["scores"]):
                        mismatched.append([c, i, out.get("message")])
                else:
                    bad += 1
                    if out.get("error") != ref["error"] or out.get("message") != ref["message"]:
                        wrong_errors.append([c, i, out.get("error"), out.get("message")])
        report["runs"].append({
            "clients": clients, "requests": sum(len(r) for r in results), "good": good,
            "bad": bad, "good_images": good_images, "wall_s": wall,
            "images_per_s": good_images / wall, "mismatched": mismatched,
            "wrong_errors": wrong_errors, "peak_rss_bytes": peak[0]})
    rss["peak_bytes"] = _peak_rss_bytes()
    rss["ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report["rss"] = rss
    report["imported_blocked_modules"] = sorted(
        m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in BLOCKED)
    with open(job["report"], "w", encoding="utf-8") as f:
        json.dump(report, f)


def run_serve_job(job, workdir, timeout=900):
    """Writes ``job`` (``export_dir``, ``requests``: lists of encoded images, ``clients``,
    ``requests_per_client``) and runs :func:`serve` on it in a fresh process; its report."""
    job = dict(job, report=os.path.join(workdir, "serve-report.json"),
               requests=[[base64.b64encode(b).decode("ascii") for b in r]
                         for r in job["requests"]])
    path = os.path.join(workdir, "serve-job.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(job, f)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "serve", path],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"serve process exited with {proc.returncode}: {proc.stderr[-3000:]}")
    with open(job["report"], encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------- request mix (numpy/PIL)
def png_bomb(width=16000, height=16000):
    """A valid RGB PNG of ``width x height`` black pixels, deflated (774 KB at 16,000^2)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    deflate = zlib.compressobj(9)
    row = bytes(1 + 3 * width)  # filter byte 0 + black pixels
    idat = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def jpeg_with_size(jpeg, height, width):
    """``jpeg`` with the frame size in its SOF0/SOF2 header replaced (a header-only bomb)."""
    import struct

    data = bytearray(jpeg)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            data[at + 5:at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
    raise ValueError("no SOF0/SOF2 marker")


def encode(array, fmt):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt)
    return buf.getvalue()


def request_mix(seed=0, good=12, max_batch_size=None):
    """``(requests, kinds)``: good JPEG/PNG batches and the hostile requests described above."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = []
    for k in range(8):
        h, w = int(rng.integers(24, 160)), int(rng.integers(24, 160))
        images.append(encode(rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                             "JPEG" if k % 2 else "PNG"))
    requests, kinds = [], []
    for k in range(good):
        requests.append([images[(k + j) % len(images)] for j in range(1 + k % 3)])
        kinds.append("good")
    bomb = png_bomb()
    hostile = [
        ([rng.bytes(2000)], "garbage"),
        ([images[0][: len(images[0]) // 2]], "garbage"),           # truncated PNG
        ([b"\xff\xd8\xff" + rng.bytes(500)], "garbage"),             # JPEG signature + junk
        ([images[1], bomb], "bomb"),
        ([jpeg_with_size(images[1], 12000, 12000)], "bomb"),
    ]
    if max_batch_size:
        hostile.append(([images[1]] * (max_batch_size + 1), "batch"))
    for request, kind in hostile:
        requests.append(request)
        kinds.append(kind)
    return requests, kinds


# ------------------------------------------------------------------- driver (Keras)
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="efficientnetv2_s")
    p.add_argument("--head", default="mldecoder")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--requests", type=int, default=50, help="requests per client")
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--markdown", help="append the table to this file")
    return p.parse_args(argv)


def _short(message):
    """The line of a TF error message that says what is wrong (not where)."""
    for line in message.splitlines():
        line = line.strip()
        if line and not line.startswith(("Graph execution error", "Detected at node", "<stack",
                                          "[[{{node", "File ")) and not line.endswith(":"):
            return line[:110]
    return message[:110]


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    sys.path.insert(0, os.path.dirname(HERE))
    import keras_mld
    from keras_mld.export import export_saved_model

    model = keras_mld.build(args.backbone, head=args.head, num_classes=args.classes,
                            input_shape=(args.size, args.size, 3), weights=None)
    requests, kinds = request_mix(max_batch_size=args.max_batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_saved_model(model, os.path.join(tmp, "m"),
                                  [f"c{i}" for i in range(args.classes)],
                                  max_batch_size=args.max_batch_size)
        report = run_serve_job({"export_dir": path, "requests": requests,
                                "clients": args.clients,
                                "requests_per_client": args.requests}, tmp, timeout=3600)
    errors = {k: sorted({_short(s["message"]) for s, kk in
                         zip(report["single"], kinds) if kk == k and s["error"]})
              for k in ("garbage", "bomb", "batch")}
    cores = len(os.sched_getaffinity(0))
    lines = [f"### Serving under load: {args.backbone} + {args.head} {args.size}px, "
             f"SavedModel `predict_images` in a TensorFlow-only process, {cores} CPU cores",
             "", "| clients | requests | good / bad | good img/s | mismatched | wrong errors "
             "| peak RSS (MiB) |", "|---|---|---|---|---|---|---|"]
    for run in report["runs"]:
        lines.append(f"| {run['clients']} | {run['requests']} | {run['good']} / {run['bad']} | "
                     f"{run['images_per_s']:.1f} | {len(run['mismatched'])} | "
                     f"{len(run['wrong_errors'])} | {run['peak_rss_bytes'] / 2**20:.0f} |")
    lines += ["", f"RSS: after import {report['rss']['after_import'] / 2**20:.0f} MiB, after "
              f"load {report['rss']['after_load'] / 2**20:.0f} MiB, process peak (VmHWM) "
              f"{report['rss']['peak_bytes'] / 2**20:.0f} MiB. Errors: "
              + "; ".join(f"{k}: {v}" for k, v in errors.items())]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    ok = all(not r["mismatched"] and not r["wrong_errors"] for r in report["runs"])
    return 0 if ok and not report["imported_blocked_modules"] else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        sys.exit(main())
