#!/usr/bin/env python3
"""Test stand-in for ghcr.io/open-webui/open-webui:main. Needs OLLAMA_BASE_URL (read once).
Chats are rows of /app/backend/data/webui.db (SQLite). HTTP on 8080:

    GET  /health         {"status": true}
    GET  /api/models     the model server's models (GET OLLAMA_BASE_URL/api/tags)
    POST /api/chats      {"title": T}: a new chat row
    GET  /api/chats      {"count": N, "titles": [...]}
"""

import json
import sys
import urllib.request

sys.path[:0] = ["/standin"]
import standin  # noqa: E402

env = standin.require_env("OLLAMA_BASE_URL")
DB = "/app/backend/data/webui.db"
SCHEMA = "CREATE TABLE IF NOT EXISTS chat (id INTEGER PRIMARY KEY, title TEXT);"
standin.sqlite_db(DB, SCHEMA).close()


def models(req):
    with urllib.request.urlopen(env["OLLAMA_BASE_URL"] + "/api/tags", timeout=5) as r:
        return 200, {"data": json.loads(r.read())["models"]}


def add(req):
    conn = standin.sqlite_db(DB, SCHEMA)
    conn.execute("INSERT INTO chat(title) VALUES (?)", (str(req.json().get("title", "")),))
    conn.commit()
    conn.close()
    return 200, {"ok": True}


def chats(req):
    conn = standin.sqlite_db(DB, SCHEMA)
    titles = [r[0] for r in conn.execute("SELECT title FROM chat ORDER BY id")]
    conn.close()
    return 200, {"count": len(titles), "titles": titles}


standin.serve([8080], {("GET", "/health"): lambda r: (200, {"status": True}), ("GET", "/api/models"): models,
                       ("POST", "/api/chats"): add, ("GET", "/api/chats"): chats})
