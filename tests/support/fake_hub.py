"""A loopback HTTP server standing in for the Hugging Face Hub (through ``HF_ENDPOINT``) and
for a plain file host (the official ML-Decoder model zoo), for the download tests.

Stdlib ``http.server`` in a daemon thread on 127.0.0.1, port chosen by the OS; it answers:

- ``HEAD`` / ``GET /<owner>/<repo>/resolve/<revision>/<file>`` as the Hub does (the headers
  ``huggingface_hub`` reads: ``X-Repo-Commit``, ``ETag``, ``Content-Length``; ``Range``);
- ``GET /zoo/<file>`` as a plain host (``Range`` -> 206).

``server.files[path] = bytes`` publishes a file, ``server.status[path] = 403`` refuses it,
``server.cut[path] = [n, ...]`` sends only the first n bytes of the next answers (one n
each, then closes),
``server.requests`` records ``(method, path, range header)``. The server stops at the end of
the ``with`` block, and by itself after ``lifetime`` seconds at the latest.
"""
import hashlib
import http.server
import threading

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _answer(self, head):
        server = self.server.owner
        path = self.path.split("?")[0]
        hub_path = path.replace("/resolve/main/", "/resolve/" + COMMIT + "/")
        server.requests.append((self.command, path, self.headers.get("Range")))
        key = path if path in server.files or path in server.status else hub_path
        if key in server.status:
            self.send_response(server.status[key])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = server.files.get(key)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and not head:
            start = int(rng[len("bytes="):].split("-")[0])
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        if "/resolve/" in path:
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.end_headers()
        if head:
            return
        cuts = server.cut.get(key)
        if cuts:
            cut = cuts.pop(0)
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def do_HEAD(self):  # noqa: N802
        self._answer(head=True)

    def do_GET(self):  # noqa: N802
        self._answer(head=False)


class FakeHost:
    """The server; ``url`` is ``http://127.0.0.1:<port>``; use as a context manager."""

    def __init__(self, lifetime=120.0):
        self.files, self.status, self.cut, self.requests = {}, {}, {}, []
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.owner = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True

    def hub_file(self, repo_id, filename, data):
        self.files[f"/{repo_id}/resolve/{COMMIT}/{filename}"] = data

    def hub_path(self, repo_id, filename):
        return f"/{repo_id}/resolve/{COMMIT}/{filename}"

    def __enter__(self):
        self._thread.start()
        self._timer.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def __exit__(self, *exc):
        self._timer.cancel()
        self.stop()
