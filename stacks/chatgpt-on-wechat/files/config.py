# encoding:utf-8
"""chatgpt-on-wechat configuration loader, mounted at /app/config.py by Ferry.

Reads /app/config.json once at start (the bot does not reload it: Ferry recreates the
container when it changes), fills in defaults for keys it does not set, and lets
environment variables named after a key in upper case (OPEN_AI_API_KEY...) override it,
as the upstream project does.
"""

import json
import os

available_setting = {
    "channel_type": "wx",
    "model": "gpt-3.5-turbo",
    "open_ai_api_key": "",
    "open_ai_api_base": "https://api.openai.com/v1",
    "proxy": "",
    "hot_reload": False,
    "single_chat_prefix": ["bot", "@bot"],
    "single_chat_reply_prefix": "[bot] ",
    "group_chat_prefix": ["@bot"],
    "group_name_white_list": [],
    "image_create_prefix": ["画"],
    "conversation_max_tokens": 1000,
    "expires_in_seconds": 3600,
    "temperature": 0.9,
    "character_desc": "",
    "subscribe_msg": "",
    "appdata_dir": "",
    "speech_recognition": False,
    "wechatmp_token": "",
    "wechatmp_port": 8080,
    "wechatmp_app_id": "",
    "wechatmp_app_secret": "",
    "wechatmp_aes_key": "",
}

config = {}


def load_config(path="/app/config.json"):
    """The merged configuration; raises FileNotFoundError or ValueError (bad JSON, an
    unknown key) so that the bot refuses to start on a broken file."""
    with open(path, "rb") as fh:
        data = json.loads(fh.read().decode("utf-8"))
    unknown = sorted(set(data) - set(available_setting))
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r}")
    config.clear()
    config.update(available_setting)
    config.update(data)
    for key in available_setting:
        value = os.environ.get(key.upper())
        if value is not None and value != "":
            config[key] = value
    return config


def conf():
    return config
