#!/usr/bin/env python3
"""llm-chat backend stand-in: a JSON API over HTTP on 0.0.0.0:8000, data in SQLite.

Environment (read once at start):
    LLM_MODEL, SECRET_KEY   required, non-empty; otherwise exit 1 with a message on stderr
    LLM_API_URL, LLM_API_KEY   optional; the key is never sent to clients
    APP_VERSION             set by the image
    DB_DIR                  default /app/db (bind-mounted from the host); PORT default 8000

Endpoints:
    GET  /api/health         200 {"status":"ok","version","model","db":"ok"}; 503 when the
                             database cannot be written ({"status":"error","db":"<reason>"})
    GET  /api/config         200 {"model","api_url","version"}
    GET  /api/conversations  200 [{"id","title","created_at"}, ...] newest first
    POST /api/conversations  JSON {"title": "..."} -> 201 {"id": N}; 400 on bad input

One log line per request on stdout; SIGTERM/SIGINT stop the server at once.
"""

import json
import os
import signal
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("APP_VERSION", "0.0.0")
DB_DIR = os.environ.get("DB_DIR", "/app/db")
DB_PATH = os.path.join(DB_DIR, "chat.db")
PORT = int(os.environ.get("PORT", "8000"))
MAX_BODY = 64 * 1024

CONFIG = {}
_schema_lock = threading.Lock()
_schema_ready = False


def log(message, stream=sys.stdout):
    stream.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {message}\n")
    stream.flush()


def load_config():
    cfg = {name: os.environ.get(name, "").strip()
           for name in ("LLM_API_URL", "LLM_MODEL", "LLM_API_KEY", "SECRET_KEY")}
    missing = [name for name in ("SECRET_KEY", "LLM_MODEL") if not cfg[name]]
    if missing:
        log(f"llm-chat-backend: refusing to start: {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set", sys.stderr)
        sys.exit(1)
    return cfg


def connect():
    """A connection with the schema in place (created on first use)."""
    global _schema_ready
    os.makedirs(DB_DIR, exist_ok=True)
    conn = sqlite3.connect(DB_PATH, timeout=5)
    if not _schema_ready:
        with _schema_lock:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript("""
                CREATE TABLE IF NOT EXISTS conversations (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    title TEXT NOT NULL,
                    created_at TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
            """)
            conn.commit()
            _schema_ready = True
    return conn


def db_check():
    """None when the database takes a write, else the reason."""
    try:
        conn = connect()
        try:
            with conn:
                conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_health', ?)",
                             (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),))
        finally:
            conn.close()
        return None
    except (sqlite3.Error, OSError) as exc:
        return str(exc) or exc.__class__.__name__


class Handler(BaseHTTPRequestHandler):
    server_version = f"llm-chat-backend/{VERSION}"
    protocol_version = "HTTP/1.1"

    def send_json(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def path_only(self):
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def do_GET(self):
        path = self.path_only()
        if path == "/api/health":
            problem = db_check()
            if problem:
                log(f"health: database not writable: {problem}", sys.stderr)
                self.send_json(503, {"status": "error", "version": VERSION,
                                     "model": CONFIG["LLM_MODEL"], "db": problem})
            else:
                self.send_json(200, {"status": "ok", "version": VERSION,
                                     "model": CONFIG["LLM_MODEL"], "db": "ok"})
        elif path == "/api/config":
            self.send_json(200, {"model": CONFIG["LLM_MODEL"], "api_url": CONFIG["LLM_API_URL"],
                                 "version": VERSION})
        elif path == "/api/conversations":
            try:
                conn = connect()
                try:
                    rows = conn.execute("SELECT id, title, created_at FROM conversations "
                                        "ORDER BY id DESC").fetchall()
                finally:
                    conn.close()
            except (sqlite3.Error, OSError) as exc:
                self.send_json(503, {"error": f"database: {exc}"})
                return
            self.send_json(200, [{"id": i, "title": t, "created_at": c} for i, t, c in rows])
        else:
            self.send_json(404, {"error": "not found"})

    do_HEAD = do_GET

    def do_POST(self):
        if self.path_only() != "/api/conversations":
            self.send_json(404, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.send_json(400, {"error": f"body must be 0..{MAX_BODY} bytes"})
            self.close_connection = True
            return
        raw = self.rfile.read(length)
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            self.send_json(400, {"error": "body is not JSON"})
            return
        title = data.get("title", "New conversation") if isinstance(data, dict) else None
        if not isinstance(title, str) or not title.strip() or len(title) > 200:
            self.send_json(400, {"error": "title must be a non-empty string of at most 200 chars"})
            return
        try:
            conn = connect()
            try:
                with conn:
                    cur = conn.execute("INSERT INTO conversations(title, created_at) VALUES (?, ?)",
                                       (title.strip(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
                new_id = cur.lastrowid
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as exc:
            self.send_json(503, {"error": f"database: {exc}"})
            return
        self.send_json(201, {"id": new_id})

    def log_request(self, code="-", size="-"):
        code = getattr(code, "value", code)
        log(f'{self.client_address[0]} "{self.requestline}" {code}')

    def log_message(self, format, *args):
        log(f"{self.client_address[0]} {format % args}", sys.stderr)


def _stop(signum, frame):
    raise SystemExit(0)


def main():
    CONFIG.update(load_config())
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    problem = db_check()
    if problem:
        log(f"warning: database {DB_PATH} not writable: {problem}", sys.stderr)
    httpd = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    httpd.daemon_threads = True
    log(f"llm-chat-backend {VERSION} listening on 0.0.0.0:{PORT} "
        f"(model {CONFIG['LLM_MODEL']}, db {DB_PATH})")
    try:
        httpd.serve_forever(poll_interval=0.5)
    finally:
        httpd.server_close()
        log("llm-chat-backend stopped")


if __name__ == "__main__":
    main()
