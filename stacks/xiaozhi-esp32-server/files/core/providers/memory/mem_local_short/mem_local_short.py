"""Memory provider mem_local_short: a short summary of the conversation kept on the
server (hot-update mount core/providers/memory/mem_local_short/mem_local_short.py)."""

VERSION = "mem_local_short 1"


class MemoryProvider:
    def __init__(self, config):
        self.config = config
        self.short_memory = ""

    async def save_memory(self, msgs):
        self.short_memory = " / ".join(m.get("content", "") for m in msgs[-10:])
        return self.short_memory

    async def query_memory(self, query):
        return self.short_memory
