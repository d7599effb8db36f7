"""The committed fuzz corpus (``tests/fixtures/fuzz``, written by
``scripts/make_fuzz_corpus.py``): every ``seed_*`` file loads, every crafted ``bad_*`` file
(the hostile inputs of issue 21) is refused with a ValueError naming it."""
import pytest

from tests.support.fuzz import SURFACES, corpus, run_surface

CASES = [(surface, name, data) for surface in SURFACES for name, data in corpus(surface)]


def test_every_surface_has_seeds_and_crafted_files():
    for surface in SURFACES:
        names = [name for name, _ in corpus(surface)]
        assert any(n.startswith("seed_") for n in names), surface
        assert any(n.startswith("bad_") for n in names), surface


@pytest.mark.parametrize("surface, name, data", CASES, ids=[f"{s}/{n}" for s, n, _ in CASES])
def test_corpus_file(tmp_path, surface, name, data):
    expected = "loaded" if name.startswith("seed_") else "refused"
    assert run_surface(surface, data, str(tmp_path)) == expected
