"""A local HTTP server standing in for an OpenAI-compatible endpoint in tests: each POST's JSON body
goes to `respond(path, headers, body) -> (status, JSON payload)`; a non-200 status sends an error body."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Respond = Callable[[str, Mapping[str, str], dict], tuple[int, dict]]


@contextmanager
def serve_json(respond: Respond) -> Iterator[str]:
    """Serve on 127.0.0.1 (a free port) while inside; yields the base URL `http://127.0.0.1:<port>/v1`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, payload = respond(self.path, self.headers, body)
            data = json.dumps(payload if status == 200 else {"error": {"message": "boom"}}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
