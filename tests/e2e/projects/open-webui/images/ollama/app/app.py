#!/usr/bin/env python3
"""Test stand-in for ollama/ollama:latest. HTTP on 11434:

    GET  /             "Ollama is running"
    POST /api/pull     {"name": M}: "downloads" model M into /root/.ollama/models/M
    GET  /api/tags     {"models": [{"name": M}, ...]} from /root/.ollama/models
"""

import json
import os
import sys

sys.path[:0] = ["/standin"]
import standin  # noqa: E402

MODELS = "/root/.ollama/models"
os.makedirs(MODELS, exist_ok=True)


def pull(req):
    name = os.path.basename(str(req.json().get("name", "")))
    if not name:
        return 400, {"error": "name required"}
    with open(os.path.join(MODELS, name), "w") as fh:
        json.dump({"name": name, "size": 1}, fh)
    return 200, {"status": "success"}


standin.serve([11434], {("GET", "/"): lambda r: (200, "Ollama is running"), ("POST", "/api/pull"): pull,
                        ("GET", "/api/tags"): lambda r: (200, {"models": [{"name": m} for m in sorted(os.listdir(MODELS))]})})
