#!/usr/bin/env python3
"""Stand-in for uni-load-improved (built from its repository's docker/ folder), the
management API over gpt-load and uni-api. WORKDIR /app.

Configuration from the environment (the stack's env_file), read once at start:
GPT_LOAD_URL, UNI_API_URL and GPT_LOAD_AUTH_KEY are required. SQLite in
/app/data/uni-load.db (mounted). HTTP on 8080:

    GET /api/v1/health    200 {"status": "healthy", "services": {...}} when gpt-load's
                          /health and uni-api's port answer, else 503
    GET /api/v1/groups    gpt-load's groups, fetched with GPT_LOAD_AUTH_KEY
"""

import json
import os
import socket
import sys
import urllib.parse
import urllib.request

sys.path[:0] = ["/standin"]
import standin  # noqa: E402

env = standin.require_env("GPT_LOAD_URL", "UNI_API_URL", "GPT_LOAD_AUTH_KEY")
db = standin.sqlite_db("/app/data/uni-load.db", """
    CREATE TABLE IF NOT EXISTS starts (at TEXT);
""")
db.execute("INSERT INTO starts VALUES (?)", (standin.STARTED,))
db.commit()
db.close()


def gpt_load(path, auth=False):
    req = urllib.request.Request(env["GPT_LOAD_URL"] + path,
                                 headers={"Authorization": f"Bearer {env['GPT_LOAD_AUTH_KEY']}"} if auth else {})
    with urllib.request.urlopen(req, timeout=3) as r:
        return json.loads(r.read())


def health(req):
    services = {}
    try:
        services["gpt-load"] = gpt_load("/health").get("status", "unknown")
    except OSError as exc:
        services["gpt-load"] = f"down: {exc}"
    u = urllib.parse.urlsplit(env["UNI_API_URL"])
    try:
        socket.create_connection((u.hostname, u.port or 80), 3).close()
        services["uni-api"] = "healthy"
    except OSError as exc:
        services["uni-api"] = f"down: {exc}"
    ok = all(v == "healthy" for v in services.values())
    return (200 if ok else 503), {"status": "healthy" if ok else "degraded", "services": services,
                                  "started": standin.STARTED}


def groups(req):
    if os.environ.get("API_KEY") and req.headers.get("X-API-Key") != os.environ["API_KEY"]:
        return 401, {"error": "invalid X-API-Key"}
    return 200, gpt_load("/api/groups", auth=True)


standin.serve([int(os.environ.get("PORT", "8080"))], {("GET", "/api/v1/health"): health,
                                                      ("GET", "/api/v1/groups"): groups})
