#!/usr/bin/env python3
"""Stand-in for ghcr.io/xinnan-tech/xiaozhi-esp32-server:web_latest (the manager: UI
and API on 8002, Spring Boot in the real image).

Configuration from the environment, read once at start (it refuses to start without
it): SPRING_DATASOURCE_DRUID_URL (jdbc:mysql://HOST:PORT/DB), _USERNAME, _PASSWORD,
SPRING_DATA_REDIS_HOST, _PORT; XIAOZHI_SERVER_SECRET (the secret the server presents).
Keeps its tables in the real MySQL-compatible database and counters in the real Redis;
uploaded files go to /uploadfile (mounted). HTTP on 8002:

    GET  /                               the manager page
    POST /xiaozhi/config/server-base     the server's configuration (Bearer secret)
    POST /xiaozhi/file/upload?name=N     store the body as /uploadfile/N (+ a row)
    GET  /xiaozhi/file/list              uploaded files (database) and Redis counter
"""

import os
import re
import sys
import time

import pymysql
import redis

sys.path[:0] = ["/standin"]
import standin  # noqa: E402

env = standin.require_env("SPRING_DATASOURCE_DRUID_URL", "SPRING_DATASOURCE_DRUID_USERNAME",
                          "SPRING_DATASOURCE_DRUID_PASSWORD", "SPRING_DATA_REDIS_HOST",
                          "SPRING_DATA_REDIS_PORT", "XIAOZHI_SERVER_SECRET")
m = re.match(r"jdbc:mysql://([^:/]+)(?::(\d+))?/([^?]+)", env["SPRING_DATASOURCE_DRUID_URL"])
if not m:
    standin.refuse("SPRING_DATASOURCE_DRUID_URL is not jdbc:mysql://HOST[:PORT]/DB")
DB = dict(host=m.group(1), port=int(m.group(2) or 3306), database=m.group(3), charset="utf8mb4",
          user=env["SPRING_DATASOURCE_DRUID_USERNAME"], password=env["SPRING_DATASOURCE_DRUID_PASSWORD"],
          autocommit=True, connect_timeout=5)
UPLOADS = "/uploadfile"


def db():
    return pymysql.connect(**DB)


for attempt in range(60):
    try:
        conn = db()
        break
    except pymysql.err.OperationalError as exc:
        if exc.args and exc.args[0] == 1045:
            standin.refuse(f"database refused the credentials: {exc}")
        standin.log(f"database not reachable yet ({exc}); retrying")
        time.sleep(1)
else:
    standin.refuse("database not reachable")
with conn.cursor() as cur:
    cur.execute("CREATE TABLE IF NOT EXISTS sys_params (param_code VARCHAR(100) PRIMARY KEY, "
                "param_value VARCHAR(2000)) DEFAULT CHARSET=utf8mb4")
    cur.execute("CREATE TABLE IF NOT EXISTS sys_upload (id INT AUTO_INCREMENT PRIMARY KEY, "
                "name VARCHAR(255), size INT, created_at DATETIME) DEFAULT CHARSET=utf8mb4")
    cur.execute("REPLACE INTO sys_params VALUES ('server.secret', %s)", (env["XIAOZHI_SERVER_SECRET"],))
conn.close()
cache = redis.Redis(host=env["SPRING_DATA_REDIS_HOST"], port=int(env["SPRING_DATA_REDIS_PORT"]),
                    password=os.environ.get("SPRING_DATA_REDIS_PASSWORD") or None, socket_timeout=5)
cache.ping()
cache.incr("xiaozhi:web:starts")


def server_base(req):
    conn = db()
    with conn.cursor() as cur:
        cur.execute("SELECT param_value FROM sys_params WHERE param_code = 'server.secret'")
        secret = cur.fetchone()[0]
    conn.close()
    if req.bearer() != secret:
        return 401, {"code": 401, "msg": "invalid server secret"}
    return 200, {"code": 0, "data": {"database": DB["database"], "redis": "ok" if cache.ping() else "down"}}


def upload(req):
    name = os.path.basename(req.query.get("name", ""))
    if not name or not req.body:
        return 400, {"code": 400, "msg": "name and a body are required"}
    with open(os.path.join(UPLOADS, name), "wb") as fh:
        fh.write(req.body)
    conn = db()
    with conn.cursor() as cur:
        cur.execute("INSERT INTO sys_upload(name, size, created_at) VALUES (%s, %s, NOW())", (name, len(req.body)))
    conn.close()
    cache.incr("xiaozhi:uploads")
    return 200, {"code": 0, "data": {"name": name, "size": len(req.body)}}


def file_list(req):
    conn = db()
    with conn.cursor() as cur:
        cur.execute("SELECT name, size FROM sys_upload ORDER BY id")
        rows = [{"name": n, "size": s} for n, s in cur.fetchall()]
    conn.close()
    return 200, {"code": 0, "data": rows, "uploads_counter": int(cache.get("xiaozhi:uploads") or 0),
                 "on_disk": sorted(os.listdir(UPLOADS)), "started": standin.STARTED}


standin.serve([8002], {
    ("GET", "/"): lambda r: (200, "<!doctype html><title>xiaozhi manager</title><h1>智控台</h1>\n"),
    ("POST", "/xiaozhi/config/server-base"): server_base,
    ("POST", "/xiaozhi/file/upload"): upload, ("GET", "/xiaozhi/file/list"): file_list})
