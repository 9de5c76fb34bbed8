"""Plugin get_weather: the weather of a city (hot-update mount plugins_func/functions/)."""

from plugins_func.register import Action, ActionResponse, ToolType, register_function

GET_WEATHER_DESC = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "获取某个地点的天气，用户应先提供一个位置。",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": []},
    },
}


@register_function("get_weather", GET_WEATHER_DESC, ToolType.SYSTEM_CTL)
def get_weather(conn=None, location="广州"):
    return ActionResponse(Action.REQLLM, f"{location}：晴，25°C", None)
