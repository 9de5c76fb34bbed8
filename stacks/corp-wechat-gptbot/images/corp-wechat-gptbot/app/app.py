#!/usr/bin/env python3
"""Stand-in for ghcr.io/baiyz0825/corp-wechat-gptbot:main (a Go/gin service).

Reads /apps/config/config.yaml once at start and refuses to start without it or
without its weConfig secrets. Keeps its SQLite database in /apps/db/gptbot.db and
writes /apps/logs/gptbot.log. HTTP on 50008 (GIN_MODE from the environment):

    GET  /test                  "pong" (the health check of the deployment notes)
    GET  /status                model, corp ID, GIN_MODE, start count (no secrets)
    POST /wxcallback            stores the body as a message (the WeCom callback)
"""

import os
import sys

sys.path[:0] = ["/standin"]
import standin  # noqa: E402

CONFIG = "/apps/config/config.yaml"
conf, digest = standin.read_config(CONFIG, "yaml")
for section in ("systemConf", "gptConfig", "weConfig"):
    if not isinstance(conf.get(section), dict):
        standin.refuse(f"{CONFIG}: section {section} missing")
we = conf["weConfig"]
missing = [k for k in ("corpId", "agentId", "corpSecret", "token", "encodingAesKey") if not we.get(k)]
if missing:
    standin.refuse(f"{CONFIG}: weConfig.{missing[0]} is empty")

db_path = os.path.join(conf["systemConf"].get("dbPath", "/apps/db"), "gptbot.db")
db = standin.sqlite_db(db_path, """
    CREATE TABLE IF NOT EXISTS starts (id INTEGER PRIMARY KEY, at TEXT, config_sha256 TEXT);
    CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, body TEXT);
""")
db.execute("INSERT INTO starts(at, config_sha256) VALUES (?, ?)", (standin.STARTED, digest))
db.commit()
starts = db.execute("SELECT COUNT(*) FROM starts").fetchone()[0]
db.close()
log_dir = conf["systemConf"].get("logPath", "/apps/logs")
os.makedirs(log_dir, exist_ok=True)
with open(os.path.join(log_dir, "gptbot.log"), "a", encoding="utf-8") as fh:
    fh.write(f"{standin.STARTED} started (GIN_MODE={os.environ.get('GIN_MODE', 'debug')}, start #{starts})\n")


def callback(req):
    conn = standin.sqlite_db(db_path, "")
    with conn:
        conn.execute("INSERT INTO messages(body) VALUES (?)", (req.body.decode("utf-8", "replace"),))
    count = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    conn.close()
    return 200, {"stored": count}


def status(req):
    return 200, {"model": conf["gptConfig"].get("model"), "corpId": we["corpId"], "starts": starts,
                 "gin_mode": os.environ.get("GIN_MODE", "debug"), "config_sha256": digest}


standin.serve([50008], {("GET", "/test"): lambda r: (200, "pong"), ("GET", "/status"): status,
                        ("POST", "/wxcallback"): callback})
