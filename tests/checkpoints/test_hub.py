"""``keras_mld.checkpoints.hub``: the hf:// address and the missing-package message."""
import sys

import pytest

from keras_mld.checkpoints.hub import hub_download, parse_hf_uri


def test_hf_addresses():
    assert parse_hf_uri("hf://timm/tresnet_m.miil_in21k") == "timm/tresnet_m.miil_in21k"
    assert parse_hf_uri("hf://me/my-preset/") == "me/my-preset"
    for bad in ("timm/x", "hf://x", "hf://a/b/c", "hf://a/../b", 3):
        with pytest.raises(ValueError, match="expected 'hf://owner/repo'"):
            parse_hf_uri(bad)


def test_without_huggingface_hub_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as when it is not installed
    with pytest.raises(ValueError, match=r"needs the huggingface_hub package.*keras-mld\[hf\]"):
        hub_download("timm/tresnet_m.miil_in21k", "model.safetensors")
