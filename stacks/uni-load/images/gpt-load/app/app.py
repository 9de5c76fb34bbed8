#!/usr/bin/env python3
"""Stand-in for ghcr.io/tbphp/gpt-load (a Go key-pool proxy), WORKDIR /app.

Configuration comes from the environment (the stack's env_file), read once at start:
AUTH_KEY is required (it refuses to start without it), PORT (3001). Keeps its SQLite
database in /app/data/gpt-load.db (mounted). HTTP:

    GET  /health                                   {"status": "healthy"}
    GET  /api/groups                               needs "Authorization: Bearer AUTH_KEY"
    POST /proxy/<group>/v1/chat/completions        a canned completion (no upstream here)
"""

import os
import sys

sys.path[:0] = ["/standin"]
import standin  # noqa: E402

env = standin.require_env("AUTH_KEY")
DB = "/app/data/gpt-load.db"
db = standin.sqlite_db(DB, """
    CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY);
    CREATE TABLE IF NOT EXISTS request_logs (id INTEGER PRIMARY KEY, grp TEXT, at TEXT);
    INSERT OR IGNORE INTO groups(name) VALUES ('default');
""")
db.close()


def groups(req):
    if req.bearer() != env["AUTH_KEY"]:
        return 401, {"code": "UNAUTHORIZED", "message": "invalid AUTH_KEY"}
    conn = standin.sqlite_db(DB, "")
    names = [r[0] for r in conn.execute("SELECT name FROM groups ORDER BY name")]
    conn.close()
    return 200, {"code": 0, "data": [{"name": n} for n in names]}


def proxy(req):
    parts = req.path.split("/")
    if len(parts) < 4 or parts[1] != "proxy":
        return 404, {"error": "not found"}
    conn = standin.sqlite_db(DB, "")
    with conn:
        conn.execute("INSERT INTO request_logs(grp, at) VALUES (?, datetime('now'))", (parts[2],))
    conn.close()
    model = req.json().get("model", "")
    return 200, {"object": "chat.completion", "model": model, "choices": [
        {"index": 0, "message": {"role": "assistant", "content": f"gpt-load group {parts[2]}: ok"}}]}


standin.serve([int(os.environ.get("PORT", "3001"))], {
    ("GET", "/health"): lambda r: (200, {"status": "healthy", "started": standin.STARTED}),
    ("GET", "/api/groups"): groups, ("POST", "*"): proxy})
