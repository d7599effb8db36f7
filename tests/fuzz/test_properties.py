"""Hypothesis property tests of every loader of untrusted files: whatever the bytes (seeds
of ``tests/fixtures/fuzz`` mutated, random bytes, structurally valid JSON / safetensors
headers of the wrong content), the loader returns or raises a ``ValueError`` naming the file.

CI runs ``KERAS_MLD_FUZZ_EXAMPLES`` (default 40) examples per test, a few seconds in all;
the maintainers' long campaign is ``scripts/fuzz_campaign.py`` (CONTRIBUTING.md).
"""
import json
import os
import struct
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fuzz import SURFACES, run_surface, seeds

EXAMPLES = int(os.environ.get("KERAS_MLD_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES <= 100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutated(draw, surface):
    """A seed of ``surface`` with up to 8 byte-level mutations (flip, overwrite with an
    interesting value, cut, insert, delete, duplicate a span)."""
    data = bytearray(draw(st.sampled_from(seeds(surface))))
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "dup"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, ord("["), ord("-")]))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(max_size=16))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif op == "dup":
            span = data[at:at + draw(st.integers(1, 64))]
            data[at:at] = span * draw(st.integers(1, 8))
    return bytes(data)


def _holds(surface, data):
    with tempfile.TemporaryDirectory() as folder:
        run_surface(surface, data, folder)  # raises Escaped when the contract is broken


@pytest.mark.parametrize("surface", sorted(SURFACES))
def test_mutated_seeds(surface):
    @FUZZ
    @given(mutated(surface))
    def check(data):
        _holds(surface, data)
    check()


@pytest.mark.parametrize("surface", sorted(SURFACES))
def test_random_bytes(surface):
    @FUZZ
    @given(st.binary(max_size=512))
    def check(data):
        _holds(surface, data)
    check()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats()
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4), max_leaves=20)


@FUZZ
@given(st.fixed_dictionaries({}, optional={
    "images": st.lists(st.fixed_dictionaries({}, optional={"id": JSON, "file_name": JSON}),
                       max_size=4) | JSON,
    "annotations": st.lists(st.fixed_dictionaries(
        {}, optional={"id": JSON, "image_id": JSON, "category_id": JSON}), max_size=4) | JSON,
    "categories": st.lists(st.fixed_dictionaries({}, optional={"id": JSON, "name": JSON}),
                           max_size=4) | JSON}))
def test_coco_files_of_the_wrong_content(data):
    _holds("coco", json.dumps(data).encode())


@FUZZ
@given(st.dictionaries(st.text(max_size=8), st.fixed_dictionaries({}, optional={
    "dtype": st.sampled_from(["F32", "BF16", "F8_E4M3", "I64", "BOOL", "X"]) | JSON,
    "shape": st.lists(st.integers(-2, 2 ** 40), max_size=3) | JSON,
    "data_offsets": st.lists(st.integers(-8, 2 ** 40), max_size=3) | JSON}), max_size=3),
    st.binary(max_size=64))
def test_safetensors_headers_of_the_wrong_content(header, buffer):
    text = json.dumps(header).encode()
    _holds("safetensors", struct.pack("<Q", len(text)) + text + buffer)
