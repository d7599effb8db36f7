"""Every ``keras-mld ...`` / ``python3 -m keras_mld ...`` command line in README.md and docs/
works as typed: it parses with the real parser, and it runs (in a scratch directory, with
``--tiny`` added) where the sub-command has a tiny variant; a sub-command without one answers
``--help``. A sub-command added later is covered the same way with no change here."""
import contextlib
import io
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from keras_mld.app import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
PROGRAM = re.compile(r"^(?:keras-mld|python3? -m keras_mld)(?:\s|$)")
FENCE = re.compile(r"^\s*```")
INLINE = re.compile(r"`([^`\n]+)`")


def _segments(text):
    """Shell segments of fenced code lines (continuations joined, comments cut)."""
    for part in re.split(r"&&|;|\|\|?", text.split(" #")[0]):
        yield part.strip()


def _command(segment):
    """(env, argv after the program) of a segment naming the program, else None."""
    try:
        tokens = shlex.split(segment)
    except ValueError:  # not a shell line (unbalanced quotes in prose)
        return None
    env = {}
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):
        key, value = tokens.pop(0).split("=", 1)
        env[key] = value
    if not tokens or not PROGRAM.match(" ".join(tokens)):
        return None
    skip = 1 if tokens[0] == "keras-mld" else 3
    return env, tokens[skip:]


def documented_commands():
    """[(where, env, argv, fenced)] of every command line in the documents."""
    found = []
    for doc in DOCS:
        in_fence, pending = False, ""
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{doc.relative_to(ROOT)}:{number}"
            if FENCE.match(line):
                in_fence = not in_fence
                continue
            if in_fence:
                pending += line.rstrip()
                if pending.endswith("\\"):
                    pending = pending[:-1] + " "
                    continue
                for segment in _segments(pending):
                    cmd = _command(segment)
                    if cmd:
                        found.append((where, *cmd, True))
                pending = ""
            else:
                for span in INLINE.findall(line):
                    cmd = _command(span)
                    if cmd:
                        found.append((where, *cmd, False))
    return found


COMMANDS = documented_commands()


def _is_mention(argv, fenced):
    """An inline name in prose ("`keras-mld train` passes ..."): the program and at most a
    sub-command. Its sub-command is checked through --help."""
    return not fenced and len(argv) <= 1


def _is_help(argv):
    return "--help" in argv or "-h" in argv


def _help_text(*subcommand):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        cli.main([*subcommand, "--help"])
    return out.getvalue()


def test_the_documents_hold_the_commands_this_test_is_about():
    subcommands = {argv[0] for _, _, argv, _ in COMMANDS if argv}
    assert {"demo", "train", "evaluate", "predict", "export", "bench"} <= subcommands


@pytest.mark.parametrize("where, env, argv, fenced", COMMANDS,
                         ids=[f"{c[0]}:{' '.join(c[2])}" for c in COMMANDS])
def test_documented_command_parses(where, env, argv, fenced):
    if _is_mention(argv, fenced):
        return  # covered by test_documented_subcommand_answers_help
    if not argv or argv[0].startswith("-"):  # the program's own options: --version, --help
        with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as done:
            cli.main(argv)
        assert done.value.code == 0
        return
    if _is_help(argv):
        assert "usage:" in _help_text(*[a for a in argv[:1] if not a.startswith("-")])
        return
    args = cli.parse_args(argv)  # SystemExit (status 2) if it does not parse as typed
    if args.command == "bench":
        from keras_mld.app import bench

        bench.parse_args(args.extra_args)


@pytest.mark.parametrize("subcommand", sorted(
    {c[2][0] for c in COMMANDS if c[2] and not c[2][0].startswith("-")}))
def test_documented_subcommand_answers_help(subcommand):
    assert "usage:" in _help_text(subcommand)


def _flags(argv):
    """The on/off options of a command line (an option not followed by a value), --tiny aside:
    they choose the code path; value options (paths, sizes) only parameterise it."""
    return tuple(sorted(
        a for i, a in enumerate(argv) if a.startswith("--") and a != "--tiny"
        and (i + 1 == len(argv) or argv[i + 1].startswith("--"))))


def _tiny_runs():
    """One run per code path (sub-command and its on/off options) among the commands with a
    tiny variant; the other lines of the same path are checked by parsing them."""
    runs, seen = [], set()
    for where, env, argv, fenced in COMMANDS:
        if not argv or _is_mention(argv, fenced) or _is_help(argv):
            continue
        if "--tiny" not in _help_text(argv[0]):
            continue
        key = (argv[0], _flags(argv[1:]))
        if key not in seen:
            seen.add(key)
            runs.append((where, env, argv))
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("where, env, argv", _tiny_runs(), ids=lambda v: str(v))
def test_documented_command_runs_tiny(where, env, argv, tmp_path):
    run_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")])}
    full = argv + ([] if "--tiny" in argv else ["--tiny"])
    proc = subprocess.run([sys.executable, "-m", "keras_mld", *full], cwd=tmp_path, env=run_env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{where}: keras-mld {' '.join(full)}\n{proc.stderr[-3000:]}"
    if argv[0] == "bench" and "--output" not in argv:
        assert (tmp_path / "BENCHMARKS.md").is_file()  # the current directory, not the package
