"""The Turing-test web server: the page, the current trial's two images, and the answer API.

Built on the standard library's ``http.server.ThreadingHTTPServer``.  Why not a framework: the server has
four routes, serves one page and a few hundred small PNGs to a handful of people on one machine or a lab's
network, and its correctness rests on the :class:`~colorization.turing.study.Study` lock and append-only log,
not on the HTTP layer; a framework (Flask, aiohttp, ...) would add a dependency and a second process model
without serving the protocol better.  Requests are small and bounded (``MAX_BODY``), every route is explicit,
nothing is loaded from outside the server (the page, script and style ship in this package).

Routes::

    GET  /                                  the page
    GET  /static/NAME                       its script and style
    POST /api/session   {"participant"}     start or resume a session -> counts, timings, next trial
    GET  /api/image/PARTICIPANT/TRIAL/SIDE  one image of the participant's current trial (left or right)
    POST /api/answer    {"participant", "trial", "choice", "display_ms", "response_ms"}

Errors are JSON ``{"error": message}`` with a 4xx status; a refused request changes nothing.
"""
from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from .study import Rejected, Study

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 4096
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png"}


class Handler(BaseHTTPRequestHandler):
    server_version = "TuringTest/1"
    study: Study = None  # set by make_server
    quiet = False

    def log_message(self, fmt, *args):  # noqa: D401  (http.server's hook)
        if not self.quiet:
            sys.stderr.write(f"{self.address_string()} - {fmt % args}\n")

    # -- replies -------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _file(self, path: Path) -> None:
        self._send(200, path.read_bytes(), CONTENT_TYPES.get(path.suffix, "application/octet-stream"))

    # -- routes --------------------------------------------------------------------------------------------
    def do_GET(self):  # noqa: N802
        try:
            parts = urlsplit(self.path).path.split("/")[1:]
            if parts in ([""], ["index.html"]):
                return self._file(STATIC / "index.html")
            if len(parts) == 2 and parts[0] == "static" and parts[1] in _static_files():
                return self._file(STATIC / parts[1])
            if len(parts) == 5 and parts[:2] == ["api", "image"]:
                _, _, participant, trial, side = parts
                if not trial.isdigit():
                    raise Rejected(404, "no such image")
                return self._file(self.study.current_image(participant, int(trial), side))
            if parts == ["api", "health"]:
                return self._json(200, {"ok": True})
            self._error(404, f"no such page: {self.path}")
        except Rejected as e:
            self._error(e.status, str(e))

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802
        try:
            route = urlsplit(self.path).path
            if route not in ("/api/session", "/api/answer"):
                raise Rejected(404, f"no such endpoint: {route}")
            body = self._body()
            if route == "/api/session":
                if not isinstance(body, dict) or set(body) != {"participant"}:
                    raise Rejected(400, "the body must be {\"participant\": ID}")
                s = self.study.start(body["participant"])
                return self._json(200, self.study.state(s))
            return self._json(200, self.study.answer(body))
        except Rejected as e:
            self._error(e.status, str(e))

    def _body(self):
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise Rejected(411, "a Content-Length header is required")
        if int(length) > MAX_BODY:
            raise Rejected(413, f"the body is larger than {MAX_BODY} bytes")
        raw = self.rfile.read(int(length))
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Rejected(400, "the body is not JSON") from None


def _static_files():
    return {p.name for p in STATIC.iterdir() if p.is_file() and p.name != "index.html"}


def make_server(study: Study, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False):
    """A ready (bound, not yet serving) server for ``study``; ``port`` 0 picks a free port."""
    handler = type("StudyHandler", (Handler,), {"study": study, "quiet": quiet})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(server) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    return t
