#!/usr/bin/env python3
"""Stand-in for ghcr.io/xinnan-tech/xiaozhi-esp32-server:server_latest (WORKDIR
/opt/xiaozhi-esp32-server).

At start, once (it never reloads anything): reads data/.config.yaml and refuses to
start without it or without manager-api url and secret; asks the manager web for its
configuration with that secret (retrying while the web starts); imports
plugins_func/register.py and every plugin in plugins_func/functions/, the memory and
the intent module selected in the config (all hot-update mounts). HTTP on 8000 (the
WebSocket port; a plain GET answers "Server is running") and 8003:

    GET /xiaozhi/ota/              the OTA check text, with the WebSocket address
    GET /xiaozhi/standin/status    what was loaded: functions, modules, models, sha256
"""

import hashlib
import importlib.util
import json
import os
import sys
import time
import urllib.request

HOME = "/opt/xiaozhi-esp32-server"
sys.path[:0] = ["/standin", HOME]
import standin  # noqa: E402

conf, digest = standin.read_config(f"{HOME}/data/.config.yaml", "yaml")
api = conf.get("manager-api") or {}
if not api.get("url") or not api.get("secret"):
    standin.refuse("data/.config.yaml: manager-api url and secret are required")

manager = None
for attempt in range(30):
    try:
        req = urllib.request.Request(api["url"] + "/config/server-base", data=b"{}", method="POST",
                                     headers={"Authorization": f"Bearer {api['secret']}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=3) as r:
            manager = json.loads(r.read())
        break
    except urllib.error.HTTPError as exc:
        standin.refuse(f"manager-api refused the secret: HTTP {exc.code}")
    except OSError as exc:
        standin.log(f"manager-api not reachable yet ({exc}); retrying")
        time.sleep(1)
if manager is None:
    standin.refuse(f"manager-api {api['url']} not reachable")


def load_module(rel):
    """Import a mounted module file; returns (module, sha256 of the file)."""
    path = os.path.join(HOME, rel)
    if not os.path.isfile(path):
        standin.refuse(f"{rel} not found")
    raw = open(path, "rb").read()
    spec = importlib.util.spec_from_file_location(rel[:-3].replace("/", "."), path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module, hashlib.sha256(raw).hexdigest()


register, _ = load_module("plugins_func/register.py")
plugins = {}
for name in sorted(os.listdir(f"{HOME}/plugins_func/functions")):
    if name.endswith(".py") and not name.startswith("_"):
        plugins[name] = load_module(f"plugins_func/functions/{name}")[1]
selected = conf.get("selected_module") or {}
memory, memory_sha = load_module(f"core/providers/memory/{selected.get('Memory', 'mem_local_short')}/"
                                 f"{selected.get('Memory', 'mem_local_short')}.py")
intent, intent_sha = load_module(f"core/providers/intent/{selected.get('Intent', 'intent_llm')}/"
                                 f"{selected.get('Intent', 'intent_llm')}.py")
functions = sorted(register.all_function_registry)
wanted = ((conf.get("Intent") or {}).get(selected.get("Intent", ""), {}) or {}).get("functions", [])
unknown = sorted(set(wanted) - set(functions))
if unknown:
    standin.refuse(f"Intent functions not registered by any plugin: {', '.join(unknown)}")
models = sorted(os.listdir(f"{HOME}/models")) if os.path.isdir(f"{HOME}/models") else []
os.makedirs(f"{HOME}/data/bin", exist_ok=True)
with open(f"{HOME}/data/bin/starts.log", "a") as fh:
    fh.write(f"{standin.STARTED} config {digest[:12]}\n")
standin.log(f"functions {functions}, memory {memory.VERSION}, intent {intent.VERSION}")
WS = conf.get("server", {}).get("websocket", "ws://127.0.0.1:8000/xiaozhi/v1/")


def status(req):
    return 200, {"functions": functions, "plugins": plugins, "memory": memory.VERSION, "memory_sha256": memory_sha,
                 "intent": intent.VERSION, "intent_sha256": intent_sha, "prompt": conf.get("prompt"),
                 "models": models, "manager": manager.get("data", {}), "config_sha256": digest,
                 "started": standin.STARTED}


standin.serve([8000, 8003], {
    ("GET", "/xiaozhi/ota/"): lambda r: (200, f"OTA接口运行正常，向设备发送的websocket地址是：{WS}"),
    ("GET", "/xiaozhi/standin/status"): status,
    ("GET", "*"): lambda r: (200, "Server is running\n")})
