#!/usr/bin/env python3
"""Test stand-in for calciumion/new-api:latest.

Configuration from the environment, read once at start (refuses to start without it):
SQL_DSN (``user:password@tcp(host:port)/db``), REDIS_CONN_STRING (``redis://host``),
SESSION_SECRET; ``--log-dir DIR`` on the command line. Tokens are rows in MySQL, each
also a file under /data; Redis counts requests. HTTP on 3000:

    GET  /api/status            {"success": true, "data": {"tokens": N, "version": ...}}
    POST /api/token?name=N      a new token row (and /data/tokens/N)
    GET  /api/token             every token, the Redis counter and the files in /data
"""

import os
import re
import sys
import time

import pymysql
import redis

sys.path[:0] = ["/standin"]
import standin  # noqa: E402

env = standin.require_env("SQL_DSN", "REDIS_CONN_STRING", "SESSION_SECRET")
args = sys.argv[1:]
log_dir = args[args.index("--log-dir") + 1] if "--log-dir" in args else "/app/logs"
m = re.fullmatch(r"([^:]+):(.*)@tcp\(([^:)]+)(?::(\d+))?\)/(.+)", env["SQL_DSN"])
if not m:
    standin.refuse("SQL_DSN is not user:password@tcp(host:port)/db")
DB = dict(user=m.group(1), password=m.group(2), host=m.group(3), port=int(m.group(4) or 3306),
          database=m.group(5), charset="utf8mb4", autocommit=True, connect_timeout=5)
os.makedirs(log_dir, exist_ok=True)
os.makedirs("/data/tokens", exist_ok=True)


def db(tries=1):
    """A connection; with ``tries`` > 1, wait for a database that is still starting (no
    depends_on condition in the compose file), but never for wrong credentials."""
    for left in range(tries - 1, -1, -1):
        try:
            return pymysql.connect(**DB)
        except pymysql.err.OperationalError as exc:
            if not left or (exc.args and exc.args[0] == 1045):
                standin.refuse(f"database: {exc}")
            time.sleep(1)


conn = db(tries=90)
with conn.cursor() as cur:
    cur.execute("CREATE TABLE IF NOT EXISTS tokens (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) UNIQUE, "
                "created_at DATETIME) DEFAULT CHARSET=utf8mb4")
conn.close()
cache = redis.Redis.from_url(env["REDIS_CONN_STRING"], socket_timeout=5)
for attempt in range(60):
    try:
        cache.ping()
        break
    except redis.exceptions.ConnectionError:
        time.sleep(1)
with open(os.path.join(log_dir, "oneapi.log"), "a") as fh:
    fh.write(f"{standin.STARTED} started\n")


def count():
    conn = db()
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM tokens")
        n = cur.fetchone()[0]
    conn.close()
    return n


def status(req):
    return 200, {"success": True, "data": {"tokens": count(), "version": "standin", "started": standin.STARTED}}


def add(req):
    name = os.path.basename(req.query.get("name", ""))
    if not name:
        return 400, {"success": False, "message": "name required"}
    conn = db()
    with conn.cursor() as cur:
        cur.execute("INSERT INTO tokens(name, created_at) VALUES (%s, NOW())", (name,))
    conn.close()
    with open(f"/data/tokens/{name}", "w") as fh:
        fh.write(name + "\n")
    cache.incr("requests")
    return 200, {"success": True, "data": {"name": name}}


def tokens(req):
    conn = db()
    with conn.cursor() as cur:
        cur.execute("SELECT name FROM tokens ORDER BY id")
        names = [r[0] for r in cur.fetchall()]
    conn.close()
    return 200, {"success": True, "data": names, "requests": int(cache.get("requests") or 0),
                 "files": sorted(os.listdir("/data/tokens"))}


standin.serve([3000], {("GET", "/api/status"): status, ("POST", "/api/token"): add, ("GET", "/api/token"): tokens})
