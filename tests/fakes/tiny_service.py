"""A tiny HTTP service for tests, standard library only. Run: PORT=8080 python tiny_service.py

- GET /health → 200 {"status": "ok", "pid", "boot", "uptime_s"}; `boot` is random per process start.
- GET /error  → logs a KeyError traceback to stderr and answers 500.
- anything else → 404.
Environment: PORT (required), CRASH_FLAG=<file> (exit 1 about 0.3 s after start while that file
exists: a crash loop under a process manager), PIDFILE=<file> (write the pid there once listening).
SIGTERM and SIGINT stop it quietly with exit code 0 (no KeyboardInterrupt traceback).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

BOOT = secrets.token_hex(8)
STARTED = time.monotonic()
CRASH_DELAY_S = 0.3

log = logging.getLogger("svc")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            body = {"status": "ok", "pid": os.getpid(), "boot": BOOT, "uptime_s": time.monotonic() - STARTED}
            self._answer(200, json.dumps(body).encode())
        elif self.path == "/error":
            try:
                {}["missing_key"]
            except KeyError:
                log.exception("request /error failed")
            self._answer(500, b'{"status": "error"}')
        else:
            self._answer(404, b'{"status": "not found"}')

    def _answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _crash() -> None:
    try:
        raise RuntimeError(f"crash flag {os.environ['CRASH_FLAG']} exists")
    except RuntimeError:
        log.exception("crashing on purpose")
    logging.shutdown()
    os._exit(1)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s svc[%(process)d]: %(message)s",
    )
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    crash_flag = os.environ.get("CRASH_FLAG")
    if crash_flag and os.path.exists(crash_flag):
        threading.Timer(CRASH_DELAY_S, _crash).start()
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    pidfile = os.environ.get("PIDFILE")
    if pidfile:
        tmp = f"{pidfile}.tmp"
        with open(tmp, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        os.replace(tmp, pidfile)
    log.info("listening on 127.0.0.1:%s boot=%s", os.environ["PORT"], BOOT)
    try:
        server.serve_forever(poll_interval=0.05)
    except SystemExit:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
