"""The distribution: ``python -m build`` gives a wheel and an sdist that ``twine check`` accepts,
the sdist rebuilds the same wheel, the wheel carries the recipes and the entry point, the version
has one source, and nothing in ``keras_mld`` reaches for a path outside the installed package."""
import ast
import email
import hashlib
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_mld"


def _version():
    """``__version__`` read from the source without importing the package."""
    tree = ast.parse((PACKAGE / "version.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__version__"]:
            return node.value.value
    raise AssertionError("keras_mld/version.py has no __version__ literal")


def _build(source, outdir, *kinds):
    # --no-isolation: the test environment already has setuptools and wheel (test extra), so the
    # test needs no index; CI's .ci/run builds with isolation, as a user would.
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", *kinds, "--outdir",
                    str(outdir), str(source)], check=True, capture_output=True, text=True,
                   timeout=300)


def _wheel_files(path):
    """{name: sha256} of the wheel's files, less the dist-info files that carry hashes/stamps."""
    with zipfile.ZipFile(path) as z:
        return {n: hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist()
                if not n.endswith(("/RECORD", "/WHEEL"))}


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    # build from a clean copy: a stale build/ folder in the checkout (setuptools never empties
    # it) could otherwise leak removed modules into the wheel
    source = tmp_path_factory.mktemp("src") / "keras-mld"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "runs", "site", ".pytest_cache"))
    out = tmp_path_factory.mktemp("dist")
    _build(source, out, "--sdist", "--wheel")
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


def test_wheel_and_sdist_pass_twine_check(dists):
    res = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dists)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("PASSED") == 2


def test_wheel_has_recipes_entry_point_and_one_version(dists):
    sdist, wheel = dists
    version = _version()
    assert wheel.name == f"keras_mld-{version}-py3-none-any.whl"
    # setuptools < 69 spells the sdist with the project name's dash
    assert sdist.name.replace("-", "_") == f"keras_mld_{version}.tar.gz"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = f"keras_mld-{version}.dist-info/"
        meta = email.message_from_bytes(z.read(info + "METADATA"))
        entry_points = z.read(info + "entry_points.txt").decode()
    zoo = {n.split("/")[-1][:-5] for n in names if n.startswith("keras_mld/zoo/")}
    assert zoo == {p.stem for p in (PACKAGE / "zoo").glob("*.yaml")} and "demo" in zoo
    assert meta["Version"] == version and meta["Name"] == "keras-mld"
    assert "keras-mld = keras_mld.app.cli:main" in entry_points
    extras = set(meta.get_all("Provides-Extra"))
    assert {"demo", "test", "docs", "serving", "hub", "cv", "glove"} <= extras
    # only the package goes in: no tests, benchmarks or docs in site-packages
    assert all(n.startswith(("keras_mld/", info)) for n in names), sorted(names)


def test_sdist_rebuilds_the_same_wheel(dists, tmp_path):
    sdist, wheel = dists
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "src", filter="data")
    (unpacked,) = (tmp_path / "src").iterdir()
    _build(unpacked, tmp_path / "again", "--wheel")
    (rebuilt,) = (tmp_path / "again").glob("*.whl")
    assert rebuilt.name == wheel.name
    assert _wheel_files(rebuilt) == _wheel_files(wheel)


def _path_reaches(node):
    """True for ``__file__`` and for ``..`` string literals (a path climbing out)."""
    if isinstance(node, ast.Name) and node.id == "__file__":
        return True
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and (
        node.value == ".." or node.value.startswith(("../", "..\\")))


def test_package_resolves_no_path_outside_itself():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if _path_reaches(node):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, "read package data with importlib.resources instead: " + str(offenders)


def test_code_cites_papers_not_files_outside_the_repository():
    pattern = re.compile(r"\bSPEC\b|papers/|\.\./shared|/work/shared")
    offenders = []
    for folder in ("keras_mld", "tests", "benchmarks", "docs"):
        for path in sorted((ROOT / folder).rglob("*")):
            rel = path.relative_to(ROOT).as_posix()
            if path.suffix not in (".py", ".md", ".yaml"):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line) and "pattern = re.compile" not in line:
                    offenders.append(f"{rel}:{number}")
    for name in ("README.md", "CONTRIBUTING.md", "mkdocs.yml"):
        text = (ROOT / name).read_text(encoding="utf-8")
        offenders += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1)
                      if pattern.search(line) and "/shared/runs" not in line]
    assert not offenders, "cite the paper (authors, title, arXiv id, section): " + str(offenders)
