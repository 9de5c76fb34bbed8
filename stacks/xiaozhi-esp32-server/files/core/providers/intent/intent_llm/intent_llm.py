"""Intent provider intent_llm: asks the LLM which registered function fits the user's
words (hot-update mount core/providers/intent/intent_llm/intent_llm.py)."""

VERSION = "intent_llm 1"


class IntentProvider:
    def __init__(self, config):
        self.functions = config.get("functions", [])

    def get_intent_system_prompt(self, functions):
        return "你是一个意图识别助手。可用的函数: " + ", ".join(functions)
