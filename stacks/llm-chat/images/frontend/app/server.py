#!/usr/bin/env python3
"""llm-chat frontend stand-in: serves /app/static (index.html) on 0.0.0.0:3000.

Environment: APP_VERSION (set by the image), PORT (default 3000), STATIC_DIR
(default /app/static). One log line per request on stdout; SIGTERM/SIGINT stop it at once.
"""

import os
import signal
import sys
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("APP_VERSION", "0.0.0")
PORT = int(os.environ.get("PORT", "3000"))
STATIC_DIR = os.environ.get("STATIC_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "static"))


def log(message, stream=sys.stdout):
    stream.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {message}\n")
    stream.flush()


class Handler(SimpleHTTPRequestHandler):
    server_version = f"llm-chat-frontend/{VERSION}"

    def list_directory(self, path):
        self.send_error(404, "not found")
        return None

    def end_headers(self):
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_request(self, code="-", size="-"):
        code = getattr(code, "value", code)
        log(f'{self.client_address[0]} "{self.requestline}" {code}')

    def log_message(self, format, *args):
        log(f"{self.client_address[0]} {format % args}", sys.stderr)


def _stop(signum, frame):
    raise SystemExit(0)


def main():
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if not os.path.isfile(os.path.join(STATIC_DIR, "index.html")):
        log(f"llm-chat-frontend: {STATIC_DIR}/index.html missing", sys.stderr)
        sys.exit(1)
    httpd = ThreadingHTTPServer(("0.0.0.0", PORT), partial(Handler, directory=STATIC_DIR))
    httpd.daemon_threads = True
    log(f"llm-chat-frontend {VERSION} listening on 0.0.0.0:{PORT}, serving {STATIC_DIR}")
    try:
        httpd.serve_forever(poll_interval=0.5)
    finally:
        httpd.server_close()
        log("llm-chat-frontend stopped")


if __name__ == "__main__":
    main()
