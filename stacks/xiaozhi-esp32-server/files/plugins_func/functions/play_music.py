"""Plugin play_music: play a local song (hot-update mount plugins_func/functions/)."""

from plugins_func.register import Action, ActionResponse, ToolType, register_function

PLAY_MUSIC_DESC = {
    "type": "function",
    "function": {
        "name": "play_music",
        "description": "唱歌、听歌、播放音乐的方法。",
        "parameters": {"type": "object", "properties": {"song_name": {"type": "string"}}, "required": ["song_name"]},
    },
}


@register_function("play_music", PLAY_MUSIC_DESC, ToolType.SYSTEM_CTL)
def play_music(conn=None, song_name="random"):
    return ActionResponse(Action.NONE, f"playing {song_name}", None)
