"""A small HTTP proxy in front of the local DynamoDB endpoint that answers chosen requests with
an AWS error instead of forwarding them (DESIGN §7: faults no emulator produces are injected at
the HTTP level). Everything else is forwarded unchanged."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from devkit.local import LOCALHOST

# (X-Amz-Target, body) -> None to forward, or the answer to give instead: (HTTP status, JSON)
Rule = Callable[[str, bytes], tuple[int, dict[str, Any]] | None]


def aws_error(status: int, code: str) -> tuple[int, dict[str, Any]]:
    """An error answer as DynamoDB sends it (JSON 1.0 protocol)."""
    return status, {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": "injected"}


@contextmanager
def fault_proxy(upstream: str, rule: Rule) -> Iterator[tuple[str, list[str]]]:
    """Yield (proxy URL, list of the answers it injected: error code, or "200")."""
    target = urlsplit(upstream)
    injected: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            fault = rule(self.headers.get("X-Amz-Target", ""), body)
            if fault is not None:
                status, error = fault
                injected.append(str(error.get("__type", status)).rpartition("#")[2])
                payload = json.dumps(error).encode()
                self._answer(status, {"Content-Type": "application/x-amz-json-1.0"}, payload)
                return
            conn = http.client.HTTPConnection(target.hostname or "", target.port, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request("POST", self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                keep = {
                    k: v
                    for k, v in answer.getheaders()
                    if k.lower() not in {"content-length", "connection", "transfer-encoding"}
                }
                self._answer(answer.status, keep, data)
            finally:
                conn.close()

        def _answer(self, status: int, headers: dict[str, str], payload: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((LOCALHOST, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOCALHOST}:{server.server_address[1]}", injected
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
