"""A tiny HTTP server run by the test bed's toolbox image, so tests can look inside a pod.

It answers from within the pod's network and mount namespaces: name resolution through the
pod's resolv.conf, and files in the pod's volumes.  Standard library only: it runs as a
container process, not inside the test's interpreter.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class _Handler(BaseHTTPRequestHandler):
    def _reply(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/healthz":
            self._reply(200, {"hostname": socket.gethostname()})
        elif url.path == "/resolve":
            try:
                infos = socket.getaddrinfo(query["name"], None, socket.AF_INET)
                self._reply(200, {"addresses": sorted({str(i[4][0]) for i in infos})})
            except socket.gaierror as exc:
                self._reply(404, {"error": str(exc)})
        elif url.path == "/file":
            try:
                with open(query["path"]) as f:
                    self._reply(200, {"content": f.read()})
            except FileNotFoundError:
                self._reply(404, {"error": "not found"})
        else:
            self._reply(404, {"error": "unknown path"})

    def do_PUT(self) -> None:
        url = urlparse(self.path)
        path = parse_qs(url.query)["path"][0]
        data = self.rfile.read(int(self.headers["Content-Length"]))
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self._reply(200, {"written": len(data)})

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(format % args + "\n")


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    # As a container's PID 1 the default SIGTERM action is ignored; exit on it like a server should.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer(("0.0.0.0", port), _Handler).serve_forever()


if __name__ == "__main__":
    main()
