"""Errors Ferry reports to the user as one line, without a traceback.

Anything that is *not* a :class:`FerryError` is a bug in Ferry and is allowed to
surface with its traceback.
"""


class FerryError(Exception):
    """A user-facing error: bad input, an unreachable host, a damaged bundle.

    The message must be a single line naming the file, key or host at fault; line
    breaks that input smuggles into it (a host, group or file name) are shown escaped
    (``\\n``). ``tasks.py`` prints it and exits with status 1.
    """

    def __init__(self, message: str = "", *args: object):
        if isinstance(message, str):
            message = message.replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(message, *args)


class HostError(FerryError):
    """A failure on one host (connection, host key, remote command).

    Args:
        host: inventory name of the host.
        message: what went wrong, one line.
    """

    def __init__(self, host: str, message: str):
        self.host = host
        super().__init__(f"{host}: {message}")
