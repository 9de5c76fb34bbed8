#!/usr/bin/env python3
"""Stand-in for yym68686/uni-api (WORKDIR /home), one OpenAI-compatible API over the
providers of /home/api.yaml.

Reads /home/api.yaml once at start (it never reloads it) and refuses to start without
it, without providers or without api_keys. Statistics go to /home/data/stats.db
(mounted). HTTP on 8000, every call needs "Authorization: Bearer <an api_keys key>":

    GET  /v1/models              the models of every provider
    POST /v1/chat/completions    forwarded to the first provider serving the model
"""

import json
import sys
import urllib.request

sys.path[:0] = ["/standin"]
import standin  # noqa: E402

conf, digest = standin.read_config("/home/api.yaml", "yaml")
if not conf.get("providers"):
    standin.refuse("/home/api.yaml: no providers")
if not conf.get("api_keys"):
    standin.refuse("/home/api.yaml: no api_keys")
KEYS = {k["api"] for k in conf["api_keys"]}
DB = "/home/data/stats.db"
db = standin.sqlite_db(DB, """
    CREATE TABLE IF NOT EXISTS starts (at TEXT, config_sha256 TEXT);
    CREATE TABLE IF NOT EXISTS requests (model TEXT, provider TEXT, status INTEGER);
""")
db.execute("INSERT INTO starts VALUES (?, ?)", (standin.STARTED, digest))
db.commit()
db.close()


def authorized(handler):
    def wrapped(req):
        if req.bearer() not in KEYS:
            return 401, {"error": "invalid API key"}
        return handler(req)
    return wrapped


def models(req):
    names = [m for p in conf["providers"] for m in p.get("model", [])]
    return 200, {"object": "list", "data": [{"id": m, "object": "model"} for m in names],
                 "config_sha256": digest, "started": standin.STARTED}


def chat(req):
    body = req.json()
    provider = next((p for p in conf["providers"] if body.get("model") in p.get("model", [])), None)
    if provider is None:
        return 404, {"error": f"no provider serves model {body.get('model')!r}"}
    upstream = urllib.request.Request(provider["base_url"], data=json.dumps(body).encode(), method="POST",
                                      headers={"Content-Type": "application/json",
                                               "Authorization": f"Bearer {provider.get('api', '')}"})
    with urllib.request.urlopen(upstream, timeout=conf.get("preferences", {}).get("model_timeout", {}).get("default", 100)) as r:
        status, payload = r.status, json.loads(r.read())
    conn = standin.sqlite_db(DB, "")
    with conn:
        conn.execute("INSERT INTO requests VALUES (?, ?, ?)", (body.get("model"), provider["provider"], status))
    conn.close()
    return status, payload


standin.serve([8000], {("GET", "/v1/models"): authorized(models),
                       ("POST", "/v1/chat/completions"): authorized(chat)})
