"""A loopback HTTP server that answers each path with a canned (status, content type,
body): a URL that is no ACME directory, as a web site, a proxy or a broken CA gives it."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

Answer = tuple[int, str, bytes]
NOT_FOUND: Answer = (404, "text/plain", b"")


@contextmanager
def canned(answers: dict[str, Answer]) -> Iterator[str]:
    """Serve `answers` (path without its leading '/' -> answer) while the block runs;
    yields the server's base URL. Other paths get a 404."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            code, ctype, body = answers.get(self.path.strip("/"), NOT_FOUND)
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
