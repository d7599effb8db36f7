"""The maintainers' long fuzz campaign over the loaders of untrusted files.

Two engines over the same surfaces and property (``tests/support/fuzz.py``: the loader
returns, or raises a ``ValueError`` naming the file):

* ``hypothesis`` (no extra install): the property tests of ``tests/fuzz/`` with many more
  examples, e.g. ``python scripts/fuzz_campaign.py hypothesis --examples 5000``;
* ``atheris`` (coverage-guided libFuzzer, ``pip install atheris``): one surface, seeded with
  its committed corpus, e.g. ``python scripts/fuzz_campaign.py atheris pth --runs 200000``
  (extra arguments go to libFuzzer, e.g. ``-max_total_time=3600``). A contract break stops
  the run and libFuzzer writes the input as ``crash-*`` (slow inputs as ``slow-unit-*``) in
  the work folder it prints; add it to ``tests/fixtures/fuzz/<surface>/`` as
  ``bad_<what>`` once fixed.

Run from the repository root.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.getcwd())


def hypothesis(args):
    env = {**os.environ, "KERAS_MLD_FUZZ_EXAMPLES": str(args.examples),
           "PYTHONPATH": os.getcwd(), "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
           "tests/fuzz/test_properties.py"] + (["-k", args.k] if args.k else [])
    return subprocess.call(cmd, env=env)


def atheris_run(args, rest):
    import atheris

    with atheris.instrument_imports(include=["keras_mld"]):
        from tests.support import fuzz
    if args.surface not in fuzz.SURFACES:
        raise SystemExit(f"surface: one of {sorted(fuzz.SURFACES)}, got {args.surface!r}")
    work = tempfile.mkdtemp(prefix=f"fuzz-{args.surface}-")
    corpus = os.path.join(work, "corpus")
    shutil.copytree(fuzz.CORPUS / args.surface, corpus)  # libFuzzer adds new inputs here
    folder = os.path.join(work, "files")
    os.mkdir(folder)

    def one_input(data):
        fuzz.run_surface(args.surface, data, folder)  # Escaped: a crash libFuzzer reports

    print(f"work folder (corpus, crash-* / slow-unit-* inputs): {work}")
    atheris.Setup([sys.argv[0], corpus, f"-runs={args.runs}", f"-artifact_prefix={work}/"]
                  + rest, one_input)
    atheris.Fuzz()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="engine", required=True)
    h = sub.add_parser("hypothesis")
    h.add_argument("--examples", type=int, default=5000)
    h.add_argument("-k", default=None, help="pytest -k expression (e.g. a surface name)")
    a = sub.add_parser("atheris")
    a.add_argument("surface")
    a.add_argument("--runs", type=int, default=100_000)
    args, rest = parser.parse_known_args()
    if args.engine == "hypothesis":
        sys.exit(hypothesis(args))
    atheris_run(args, rest)


if __name__ == "__main__":
    main()
