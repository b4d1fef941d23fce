"""A tiny shop service for the healbot demo. It has two planted bugs; healbot finds and fixes them."""

import json
import logging
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

logging.basicConfig(
    stream=sys.stderr,
    level=logging.INFO,
    format="%(asctime)s %(levelname)s shop[%(process)d]: %(message)s",
)
log = logging.getLogger("shop")

PRICES = {"apple": 120, "bread": 250, "cheese": 540}
ORDERS: list[int] = []


def checkout_total(items):
    total = 0
    for name in items:
        price = PRICES[name]
        total += price
    return total


def average_order():
    return sum(ORDERS) // len(ORDERS)


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        try:
            if url.path == "/health":
                return self.reply(200, {"status": "ok", "pid": os.getpid()})
            if url.path == "/checkout":
                items = query.get("items", [""])[0].split(",")
                return self.reply(200, {"total": checkout_total(items)})
            if url.path == "/stats":
                return self.reply(200, {"average": average_order()})
            return self.reply(404, {"error": "not found"})
        except Exception:
            log.exception("request %s failed", url.path)
            return self.reply(500, {"error": "internal error"})

    def log_message(self, format, *args):
        pass


def main():
    port = int(os.environ["PORT"])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("shop listening on 127.0.0.1:%d", port)
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
