"""Downloading published checkpoints into keras-mld's cache, never leaving it corrupt.

- :func:`cache_dir`: ``$KERAS_MLD_CACHE_DIR`` (read at each call) or ``~/.cache/keras_mld``;
  converted weights and presets are kept under it.
- :func:`download_url`: one file from a plain HTTP(S) host (the official ML-Decoder model
  zoo, or a mirror), written as ``<path>.part`` and renamed into place only when complete
  (and its SHA-256 matches, where one is known). An interrupted download keeps its ``.part``
  file, which is never read as a checkpoint: the next call resumes it with an HTTP ``Range``
  request. Hand-written on :mod:`urllib` because the Hub's client (``huggingface_hub``)
  only downloads from a Hub, and Keras' ``get_file`` neither resumes nor reports 403s apart.

Files from the Hugging Face Hub go through :mod:`keras_mld.checkpoints.hub` instead (its own
cache, resume and offline mode).
"""
import hashlib
import http.client
import os
import urllib.error
import urllib.request

from keras_mld.atomic import atomic_path

CHUNK = 1 << 20


class DownloadError(ValueError):
    """A download that failed: ``url``, the HTTP ``status`` (None without an answer), ``why``."""

    def __init__(self, url, status, why):
        super().__init__(f"download of {url} failed: {why}")
        self.url, self.status, self.why = url, status, why


def cache_dir(*parts):
    """``$KERAS_MLD_CACHE_DIR`` (or ``~/.cache/keras_mld``) joined with ``parts``."""
    root = os.environ.get("KERAS_MLD_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras_mld")
    return os.path.join(root, *parts)


def _progress(total, initial, name):
    try:
        from tqdm.auto import tqdm  # huggingface_hub's progress bars; off when not a terminal
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=name,
                disable=None)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(url, start, timeout):
    headers = {"User-Agent": "keras-mld"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=timeout)
    except urllib.error.HTTPError as err:
        raise DownloadError(url, err.code, f"the host answered HTTP {err.code} "
                                           f"({err.reason})") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(url, None, f"no answer from the host ({reason})") from None


def download_url(url, path, sha256=None, timeout=60):
    """Downloads ``url`` to ``path`` (kept as it is when it exists) and returns ``path``.

    ``path`` appears only complete: the bytes go to ``path + ".part"`` first, which an
    interrupted download leaves behind for the next call to resume (``Range``); a file that
    ends short of its ``Content-Length`` or whose SHA-256 differs from ``sha256`` is removed.
    Raises :class:`DownloadError` (a ``ValueError``) naming the URL and the cause.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isfile(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    part = path + ".part"
    start = os.path.getsize(part) if os.path.isfile(part) else 0
    response = _open(url, start, timeout)
    with response:
        if start and response.status != 206:  # the host ignored Range: start again
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None and length.isdigit() else None
        bar = _progress(total, start, os.path.basename(path))
        received = start
        try:
            with open(part, "ab" if start else "wb") as f:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    f.write(block)
                    received += len(block)
                    if bar is not None:
                        bar.update(len(block))
        except (http.client.IncompleteRead, OSError) as err:
            raise DownloadError(url, None, f"interrupted after {received} of {total or '?'} "
                                f"bytes ({type(err).__name__}); call again to resume (the "
                                f"partial file {part} is kept for that only)") from None
        finally:
            if bar is not None:
                bar.close()
    if total is not None and received != total:
        raise DownloadError(url, None, f"interrupted after {received} of {total} bytes; call "
                            f"again to resume (the partial file {part} is kept for that only)")
    if sha256 is not None:
        actual = _sha256(part)
        if actual != sha256:
            os.remove(part)
            raise DownloadError(url, None, f"the file's SHA-256 is {actual}, expected {sha256} "
                                "(a damaged or different file; it was removed)")
    with atomic_path(path, overwrite=True, caller="download_url") as tmp:
        os.replace(part, tmp)
    return path
