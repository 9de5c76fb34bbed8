"""Function-call registry of xiaozhi-esp32-server (hot-update mount
plugins_func/register.py). Plugins in plugins_func/functions/ decorate their entry
point with @register_function(name, description, type); the server imports every
plugin once at start and offers the registered functions to the intent module.
"""

from enum import Enum


class ToolType(Enum):
    NONE = (1, "no follow-up")
    WAIT = (2, "call, then wait")
    SYSTEM_CTL = (3, "system control")
    IOT_CTL = (4, "IoT device control")


class Action(Enum):
    NONE = 0
    RESPONSE = 1
    REQLLM = 2


class ActionResponse:
    def __init__(self, action, result=None, response=None):
        self.action = action
        self.result = result
        self.response = response


all_function_registry = {}


def register_function(name, desc, type=None):
    """Decorator: register ``func`` under ``name`` with its OpenAI function description."""
    def decorator(func):
        all_function_registry[name] = {"func": func, "description": desc, "type": type or ToolType.NONE}
        return func
    return decorator
