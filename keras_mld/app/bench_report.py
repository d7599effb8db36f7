"""Markdown report of :mod:`keras_mld.app.bench`: tables, the target checks, BENCHMARKS.md sections.

No TensorFlow / JAX import: ratios, checks and formatting over the rows
``keras_mld.app.bench.run`` returns.
"""
import os
import re
import statistics

RATIO_COLUMNS = ("head", "N", "jit", "infer ratio", "train ratio", "memory ratio", "FLOP bound",
                 "infer eff.", "train eff.")
ABS_COLUMNS = ("head", "N", "jit", "params (M)", "GFLOPs/img", "infer img/s", "train img/s",
               "train peak mem (MiB)", "note")

MEMORY_METHOD = {
    "jax": "XLA memory analysis of the compiled training step (arguments + outputs + "
           "temporaries - aliased buffers)",
    "tensorflow-gpu": "tf.config.experimental.get_memory_info('GPU:0') peak over one training "
                      "step (after reset_memory_stats)",
    "tensorflow-cpu": "increase of the process peak RSS (VmHWM, reset via /proc/self/clear_refs) "
                      "over one training step: includes allocator effects, coarse",
}
FLOPS_METHOD = {
    "jax": "XLA cost_analysis()['flops'] of the forward pass compiled for the CPU at batch 1",
    "tensorflow": "tensorflow.python.profiler.model_analyzer float_operation on the "
                  "tf.function graph at batch 1, plus Einsum ops (2 x product of index sizes)",
}
TIMING_METHOD = {
    "jax": "jax.jit stateless forward pass / training step (stateless_call, value_and_grad, "
           "Adam.stateless_apply, donated buffers); always jitted, so jit = True only",
    "tensorflow": "model.predict_on_batch / model.train_on_batch after "
                  "model.compile(jit_compile=jit)",
}


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def paired_ratio(row, ref, key):
    """Throughput ratio ``row / ref`` for ``key`` ("infer" or "train").

    With per-repetition throughputs for both (``<key>_reps``, same length: the round-robin
    repetitions), the median of the per-repetition ratios: both were timed seconds apart in
    the same repetition, so drifts of the machine's speed over the run (turbo, other load)
    cancel. Otherwise the ratio of the medians."""
    a, b = row.get(f"{key}_reps") or [], ref.get(f"{key}_reps") or []
    if a and len(a) == len(b) and all(b):
        return statistics.median(x / y for x, y in zip(a, b))
    return ratio(row.get(key), ref.get(key))


def add_ratios(rows):
    """Adds ratios to GAP (same N, same jit), the FLOP bound and the efficiencies."""
    gap = {(r["N"], r["jit"]): r for r in rows if r["head"] == "gap"}

    for r in rows:
        g = gap.get((r["N"], r["jit"]), {})
        r["infer_ratio"] = paired_ratio(r, g, "infer")
        r["train_ratio"] = paired_ratio(r, g, "train")
        r["memory_ratio"] = ratio(r["memory"], g.get("memory"))
        r["flop_bound"] = ratio(g.get("gflops"), r["gflops"])
        r["infer_eff"] = ratio(r["infer_ratio"], r["flop_bound"])
        r["train_eff"] = ratio(r["train_ratio"], r["flop_bound"])
    return rows


def section_name(args, info):
    if args.section:
        return args.section
    where = "gpu" if not info["accelerator"].startswith("none") else "cpu"
    mode = "-tiny" if args.tiny else "-quick" if args.quick else ""
    return f"heads-{args.backbone}-{args.size}-{info['backend']}-{where}{mode}"


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def _table(columns, lines):
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]
    return out


def render(args, info, rows):
    backend = info["backend"]
    where = "gpu" if not info["accelerator"].startswith("none") else "cpu"
    mem_key = "jax" if backend == "jax" else f"tensorflow-{where}"
    versions = ", ".join(f"{k} {info[k]}" for k in ("keras", "jax", "tensorflow", "python")
                         if k in info)
    kwargs = {h: args.head_kwargs[h] for h in args.heads if args.head_kwargs.get(h)}
    lines = [
        f"### Heads on {args.backbone} {args.size}px: {backend}, {info['accelerator']}",
        "",
        f"- machine: CPU {info['cpu']} ({info['cpus']} cores), accelerator {info['accelerator']}",
        f"- backend {backend}; {versions}; dtype policy {info['dtype_policy']}",
        f"- command: `{_command(args)}`; wall time {info.get('wall_s', '?')} s",
        f"- batch: inference {args.batch}, training "
        f"{'not run (--no-train)' if args.no_train else args.train_batch}; median of {args.reps} "
        f"round-robin repetitions of {args.iters} steps after {args.warmup} warm-up steps",
        f"- head kwargs: {kwargs or 'defaults'}",
        f"- timing: {TIMING_METHOD[backend]}; training = random images, multi-hot labels, "
        "AsymmetricLoss, Adam",
        f"- GFLOPs (counted, 1 FLOP = 1 multiply or add): {FLOPS_METHOD[backend]}",
        f"- memory: {MEMORY_METHOD[mem_key]}"
        + (f"; device peak_bytes_in_use of the whole process: {info['device_peak_MiB']} MiB"
           if "device_peak_MiB" in info else ""),
        "- ratios are to GAP at the same N and jit in this run, the median over repetitions of "
        "the ratio within each repetition; FLOP bound = GAP FLOPs / head FLOPs; efficiency = "
        "throughput ratio / FLOP bound",
        "",
        "Ratios to GAP:",
        "",
    ]
    lines += _table(RATIO_COLUMNS, [
        (r["head"], r["N"], r["jit"], _fmt(r["infer_ratio"], ".3f"), _fmt(r["train_ratio"], ".3f"),
         _fmt(r["memory_ratio"], ".3f"), _fmt(r["flop_bound"], ".3f"), _fmt(r["infer_eff"], ".3f"),
         _fmt(r["train_eff"], ".3f")) for r in rows])
    lines += ["", "Absolute numbers:", ""]
    lines += _table(ABS_COLUMNS, [
        (r["head"], r["N"], r["jit"], _fmt(r["params"] and r["params"] / 1e6, ".2f"),
         _fmt(r["gflops"], ".3f"), _fmt(r["infer"], ".1f"), _fmt(r["train"], ".1f"),
         _fmt(r["memory"] and r["memory"] / 2 ** 20, ".1f"), r["error"] or "")
        for r in rows])
    lines += ["", "Targets (from the issue; PASS/MISS on this run, n/a = not measured):", ""]
    lines += [f"- {status}: {text}" for status, text in checks(rows)]
    if args.tiny or args.quick:
        lines += ["", "(quick/tiny mode: a smoke run of the method on a toy backbone whose cost "
                      "is of the order of the head's; its ratios say nothing about the targets)"]
    return "\n".join(lines) + "\n"


def _command(args):
    import shlex

    return (f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'tensorflow')} python "
            f"benchmarks/heads.py {shlex.join(getattr(args, 'argv', []))}").rstrip()


def _row(rows, head, n, jit):
    for r in rows:
        if r["head"] == head and r["N"] == n and r["jit"] == jit:
            return r
    return None


def _get(rows, head, n, jit, key):
    row = _row(rows, head, n, jit)
    return None if row is None else row.get(key)


def checks(rows):
    """``[(PASS|MISS|n/a, text)]`` for the issue's targets, for each jit mode in ``rows``."""
    out = []
    ns = sorted({r["N"] for r in rows})
    if not ns:
        return out
    lo, hi = ns[0], ns[-1]
    # checks of quantities the run did not measure at all (--no-train, head not run) are left out
    has_train = any(r.get("train") is not None or r.get("memory") is not None for r in rows)
    has_q2l = any(r["head"] == "query2label" for r in rows)
    has_mld = any(r["head"] == "mldecoder" for r in rows)
    pair = [n for n in (100, 5000) if n in ns] if 100 in ns and 5000 in ns else [lo, hi]
    for jit in sorted({r["jit"] for r in rows}, reverse=True):
        tag = f"[jit={jit}]"

        def verdict(ok):
            return "n/a" if ok is None else ("PASS" if ok else "MISS")

        for n in pair if has_mld else ():
            eff = _get(rows, "mldecoder", n, jit, "infer_eff")
            out.append((verdict(None if eff is None else eff >= 0.97),
                        f"{tag} ML-Decoder inference ratio >= 0.97 x FLOP bound at N={n}: "
                        f"efficiency {_fmt(eff, '.3f')}"))
        a = _row(rows, "mldecoder", pair[0], jit)
        b = _row(rows, "mldecoder", pair[-1], jit)
        rel = paired_ratio(b, a, "infer") if a and b else None
        if has_mld:
            out.append((verdict(None if rel is None else rel >= 0.97),
                        f"{tag} ML-Decoder inference at N={pair[-1]} >= 0.97 x at N={pair[0]}: "
                        f"{_fmt(rel, '.3f')}"))
        has_mld_train = has_mld and has_train
        for n in ns if has_mld_train else ():
            t = _get(rows, "mldecoder", n, jit, "train_ratio")
            out.append((verdict(None if t is None else t >= 0.80),
                        f"{tag} ML-Decoder training ratio to GAP >= 0.80 at N={n}: {_fmt(t, '.3f')}"))
        for n in ns if has_mld_train else ():
            m = _get(rows, "mldecoder", n, jit, "memory_ratio")
            out.append((verdict(None if m is None else m <= 1.15),
                        f"{tag} ML-Decoder peak training memory <= 1.15 x GAP at N={n}: "
                        f"{_fmt(m, '.3f')}"))
        if not has_q2l:
            continue
        q_lo = _get(rows, "query2label", lo, jit, "infer_ratio")
        q_hi = _get(rows, "query2label", hi, jit, "infer_ratio")
        d_hi = _get(rows, "mldecoder", hi, jit, "infer_ratio")
        ok = None
        if q_lo and lo != hi and (d_hi or not has_mld):
            ok = q_hi is not None and q_hi <= 0.5 * q_lo and (d_hi is None or q_hi < d_hi)
            if q_hi is None and _get(rows, "query2label", hi, jit, "error"):
                ok = True  # failed (e.g. out of memory) at the largest N
        out.append((verdict(ok),
                    f"{tag} Query2Label collapses with N (inference ratio at N={hi} <= 0.5 x "
                    f"at N={lo}, and below ML-Decoder's where run): {_fmt(q_lo, '.3f')} -> "
                    f"{_fmt(q_hi, '.3f')} (ML-Decoder {_fmt(d_hi, '.3f')})"))
    return out


def write_section(path, name, text):
    """Writes ``text`` as section ``name`` of ``path`` (replacing that section if present)."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    old = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end) + "\n?", re.S)
    if pattern.search(old):
        new = pattern.sub(lambda _: block, old)
    else:
        head = old if old else ("# Benchmarks\n\nWritten by `benchmarks/heads.py` "
                                "(`keras_mld.app.bench`); one section per setup.\n")
        new = head.rstrip("\n") + "\n\n" + block
    with open(path, "w") as f:
        f.write(new)


def parse_tables(text):
    """Markdown tables in ``text`` as lists of dicts (header -> cell): for tests and tools."""
    tables, current, header = [], None, None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            current = header = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header, current = cells, []
            tables.append(current)
        elif set("".join(cells)) <= set("-: "):
            continue
        else:
            current.append(dict(zip(header, cells)))
    return tables
