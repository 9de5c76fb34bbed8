"""Shared runtime of Ferry's python3 stand-in images (copied into each image as
``/standin/standin.py``; the images' own ``app.py`` imports it).

A stand-in replaces a real image that cannot be pulled here. It keeps the real image's
ports, paths and start-up behaviour: it refuses to start without its configuration,
reads it once at start (never again), and writes its data under the mounted path.
Only the Python 3 standard library (plus ``yaml``/``pymysql``/``redis`` where an image
installs them) is used.
"""

import hashlib
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

NAME = os.environ.get("STANDIN_NAME", "standin")
STARTED = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def log(message, stream=None):
    """One timestamped line on stdout (or ``stream``), flushed."""
    stream = stream or sys.stdout
    stream.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {NAME}: {message}\n")
    stream.flush()


def refuse(reason):
    """Exit 1 with ``refusing to start: <reason>`` on stderr (what a real image does
    with a missing or broken configuration)."""
    log(f"refusing to start: {reason}", sys.stderr)
    sys.exit(1)


def read_config(path, kind="json"):
    """Parse the config file at ``path`` once (``kind``: json or yaml).

    Returns:
        ``(data, sha256 hex of the bytes read)``; refuses to start when the file is
        missing, not UTF-8 or malformed.
    """
    if not os.path.isfile(path):
        refuse(f"config file {path} not found")
    raw = open(path, "rb").read()
    try:
        text = raw.decode("utf-8")
        if kind == "yaml":
            import yaml
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error means: do not start
        refuse(f"config file {path} is not valid {kind}: {exc}")
    if not isinstance(data, dict):
        refuse(f"config file {path} must hold a mapping")
    log(f"read config {path} ({len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()[:12]})")
    return data, hashlib.sha256(raw).hexdigest()


def require_env(*names):
    """The values of environment variables ``names``; refuses to start when one is empty."""
    values = {n: os.environ.get(n, "").strip() for n in names}
    missing = [n for n, v in values.items() if not v]
    if missing:
        refuse(f"environment variable {', '.join(missing)} not set")
    return values


def sqlite_db(path, schema):
    """Open (creating dir and file) an SQLite database under the mounted data path and
    apply ``schema`` (SQL script, idempotent). One connection per call."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    conn = sqlite3.connect(path, timeout=5)
    conn.executescript(schema)
    conn.commit()
    return conn


class Request:
    """What a route handler sees: ``method``, ``path``, ``query`` (dict of first
    values), ``headers``, ``body`` (bytes) and ``json()``."""

    def __init__(self, handler, body):
        parts = urlsplit(handler.path)
        self.method, self.path, self.headers, self.body = handler.command, parts.path, handler.headers, body
        self.query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.port = handler.server.server_address[1]

    def json(self):
        return json.loads(self.body or b"{}")

    def bearer(self):
        auth = self.headers.get("Authorization", "")
        return auth[7:].strip() if auth.startswith("Bearer ") else ""


def _handler(routes):
    class Handler(BaseHTTPRequestHandler):
        server_version = NAME
        protocol_version = "HTTP/1.1"

        def _dispatch(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if 0 < length <= 10 << 20 else b""
            req = Request(self, body)
            route = routes.get((req.method, req.path)) or routes.get((req.method, "*"))
            try:
                status, payload = route(req) if route else (404, {"error": "not found"})
            except Exception as exc:  # noqa: BLE001 - report, keep serving
                log(f"error in {req.method} {req.path}: {exc!r}", sys.stderr)
                status, payload = 500, {"error": str(exc)}
            if isinstance(payload, (dict, list)):
                data, ctype = json.dumps(payload, ensure_ascii=False).encode(), "application/json; charset=utf-8"
            else:
                data, ctype = str(payload).encode(), "text/plain; charset=utf-8"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch

        def log_request(self, code="-", size="-"):
            log(f'{self.client_address[0]} "{self.requestline}" {getattr(code, "value", code)}')

        def log_message(self, format, *args):
            log(f"{self.client_address[0]} {format % args}", sys.stderr)

    return Handler


def serve(ports, routes):
    """Serve ``routes`` (``{(METHOD, path): fn(Request) -> (status, dict|list|str)}``;
    path ``*`` matches any) on every TCP port in ``ports`` until SIGTERM/SIGINT."""
    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    routes.setdefault(("HEAD", "*"), lambda r: (200, ""))
    servers = []
    for port in ports:
        httpd = ThreadingHTTPServer(("0.0.0.0", int(port)), _handler(routes))
        httpd.daemon_threads = True
        servers.append(httpd)
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True).start()
    log(f"listening on {', '.join(f'0.0.0.0:{p}' for p in ports)}")
    try:
        while True:
            time.sleep(3600)
    finally:
        for httpd in servers:
            httpd.server_close()
        log("stopped")
