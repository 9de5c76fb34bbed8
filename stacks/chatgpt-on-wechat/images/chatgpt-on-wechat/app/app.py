#!/usr/bin/env python3
"""Stand-in for zhayujie/chatgpt-on-wechat's ``python -u app.py`` (WORKDIR /app).

Loads its configuration once through the mounted /app/config.py (which reads
/app/config.json and applies env overrides such as OPEN_AI_API_KEY); refuses to start
when either file is missing or broken. Keeps its user data under ``appdata_dir``
(mounted). Serves HTTP on 80 and 443 inside the container:

    GET /wx?signature&timestamp&nonce&echostr   WeChat server verification (wechatmp):
                                                echostr when the signature matches
                                                sha1(sorted(token, timestamp, nonce))
    GET /status                                 what it loaded (no secrets)
"""

import hashlib
import os
import pickle
import sys

sys.path[:0] = ["/standin", "/app"]
import standin  # noqa: E402

if not os.path.isfile("/app/config.py"):
    standin.refuse("/app/config.py not found")
import config as cow_config  # noqa: E402

try:
    conf = cow_config.load_config("/app/config.json")
except (OSError, ValueError) as exc:
    standin.refuse(f"cannot load /app/config.json: {exc}")

channel = conf["channel_type"]
if channel not in ("wx", "wechatmp", "wechatmp_service", "wechatcom_app"):
    standin.refuse(f"unknown channel_type {channel!r}")
if channel == "wechatmp" and not (conf["wechatmp_token"] and conf["wechatmp_app_id"]):
    standin.refuse("channel wechatmp needs wechatmp_token and wechatmp_app_id")

appdata = conf["appdata_dir"] or "/app"
os.makedirs(appdata, exist_ok=True)
users_file = os.path.join(appdata, "user_datas.pkl")
users = {}
if os.path.isfile(users_file):
    with open(users_file, "rb") as fh:
        users = pickle.load(fh)
users["starts"] = users.get("starts", 0) + 1
with open(users_file, "wb") as fh:
    pickle.dump(users, fh)
standin.log(f"channel {channel}, model {conf['model']}, start #{users['starts']}")


def wx(req):
    token = conf["wechatmp_token"]
    parts = sorted([token, req.query.get("timestamp", ""), req.query.get("nonce", "")])
    ok = channel == "wechatmp" and hashlib.sha1("".join(parts).encode()).hexdigest() == req.query.get("signature")
    return (200, req.query.get("echostr", "")) if ok else (403, "signature mismatch")


def status(req):
    keys = ("channel_type", "model", "character_desc", "subscribe_msg", "group_name_white_list",
            "single_chat_prefix", "group_chat_prefix")
    return 200, {**{k: conf[k] for k in keys}, "api_key_set": bool(conf["open_ai_api_key"]),
                 "starts": users["starts"], "started": standin.STARTED}


standin.serve([80, 443], {("GET", "/wx"): wx, ("GET", "/status"): status})
