"""The Hugging Face Hub through its own client, ``huggingface_hub`` (``pip install
keras-mld[hf]``): its cache (``HF_HOME`` / ``HF_HUB_CACHE``), resumed downloads, progress
bars, ``HF_ENDPOINT`` and offline mode (``HF_HUB_OFFLINE=1``) all come from it.

``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_CACHE`` are read at each call (not only when
``huggingface_hub`` is first imported). Every failure is a ``ValueError`` that names the
``hf://`` address and says what to do.
"""
import os
import re

HF_SCHEME = "hf://"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def require_hub():
    """The ``huggingface_hub`` module (``ValueError`` saying how to install it)."""
    try:
        import huggingface_hub
    except ImportError:
        raise ValueError("hf://: the Hugging Face Hub needs the huggingface_hub package "
                         "(pip install 'keras-mld[hf]')") from None
    return huggingface_hub


def parse_hf_uri(uri):
    """``"hf://owner/repo"`` -> ``"owner/repo"`` (``ValueError`` for anything else)."""
    if not isinstance(uri, str) or not uri.startswith(HF_SCHEME):
        raise ValueError(f"hf://: expected 'hf://owner/repo', got {uri!r}")
    repo_id = uri[len(HF_SCHEME):].strip("/")
    if not _REPO_ID.match(repo_id):
        raise ValueError(f"hf://: expected 'hf://owner/repo' (letters, digits, '.', '_', '-'), "
                         f"got {uri!r}")
    return repo_id


def _hub_kwargs():
    kwargs = {}
    if os.environ.get("HF_ENDPOINT"):
        kwargs["endpoint"] = os.environ["HF_ENDPOINT"].rstrip("/")
    if os.environ.get("HF_HUB_CACHE"):
        kwargs["cache_dir"] = os.environ["HF_HUB_CACHE"]
    elif os.environ.get("HF_HOME"):
        kwargs["cache_dir"] = os.path.join(os.environ["HF_HOME"], "hub")
    return kwargs


def hub_download(repo_id, filename):
    """``hf_hub_download(repo_id, filename)``: the local path of the file in the Hub cache."""
    hf = require_hub()
    from huggingface_hub import errors

    where = f"{HF_SCHEME}{repo_id} (file {filename!r})"
    try:
        return hf.hf_hub_download(repo_id, filename, **_hub_kwargs())
    except errors.GatedRepoError:
        raise ValueError(f"{where}: the repository is gated; accept its terms on the Hub and "
                         "log in (hf auth login or HF_TOKEN)") from None
    except errors.RepositoryNotFoundError:
        raise ValueError(f"{where}: no such repository on the Hub (or it is private: log in "
                         "with hf auth login or HF_TOKEN)") from None
    except errors.LocalEntryNotFoundError as err:  # (a subclass of EntryNotFoundError)
        cause = f" ({err.__cause__})" if err.__cause__ is not None else ""
        raise ValueError(f"{where}: not in the Hub cache, and the Hub did not serve it"
                         f"{cause}: offline (HF_HUB_OFFLINE=1), no network, or the host "
                         "refused; download it once online (check HF_ENDPOINT)") from None
    except (errors.EntryNotFoundError,
            getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)):
        raise ValueError(f"{where}: the repository has no such file") from None
    except errors.HfHubHTTPError as err:
        raise ValueError(f"{where}: the Hub answered an error ({err}); try again, or check "
                         "HF_ENDPOINT") from None
    except Exception as err:  # the HTTP client's own (httpx): dropped connection, timeout, size
        raise ValueError(f"{where}: the download failed ({type(err).__name__}: {err}); call "
                         "again to resume it "
                         "(huggingface_hub keeps the partial file for that)") from None


def hub_upload_folder(folder, repo_id, private=None, commit_message=None):
    """Creates ``repo_id`` if needed and uploads ``folder``; returns the commit's URL."""
    hf = require_hub()
    kwargs = {"endpoint": _hub_kwargs()["endpoint"]} if "endpoint" in _hub_kwargs() else {}
    api = hf.HfApi(**kwargs)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder,
                                 commit_message=commit_message or "Upload keras-mld preset")
    except hf.errors.HfHubHTTPError as err:
        raise ValueError(f"{HF_SCHEME}{repo_id}: the upload failed ({err}); log in with "
                         "hf auth login or HF_TOKEN and check that you may write there") from None
    return getattr(info, "commit_url", str(info))
