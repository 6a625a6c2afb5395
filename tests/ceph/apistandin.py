"""A stand-in for a Kubernetes API server's PV list, for PV sources that fail or filter.

A fake, named as such: the real test bed's API server can't be made to answer 500 for one
list, nor to hand out a filtered list, and it is only up when the test bed is built. It serves
exactly the two requests `ceph orphans --kubeconfig` makes: the SelfSubjectAccessReview for
`list persistentvolumes` and the PV list itself, with the status, verdict and items a test
sets. It binds a loopback address in this suite's test network.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.polling import loopback_subnet


class ApiStandIn:
    def __init__(self, workdir: Path) -> None:
        self.pv_status = 200
        self.allowed = True
        self.pvs: list[dict[str, Any]] = []
        self.requests: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                review = json.loads(self.rfile.read(length) or b"{}")
                stand_in.requests.append(f"POST {self.path}")
                if self.path != "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews":
                    self._send(404, _status(404, "NotFound"))
                    return
                review["status"] = {"allowed": stand_in.allowed}
                self._send(201, review)

            def do_GET(self) -> None:
                stand_in.requests.append(f"GET {self.path}")
                if self.path.split("?")[0] != "/api/v1/persistentvolumes":
                    self._send(404, _status(404, "NotFound"))
                elif stand_in.pv_status != 200:
                    reason = "Forbidden" if stand_in.pv_status == 403 else "InternalError"
                    self._send(stand_in.pv_status, _status(stand_in.pv_status, reason))
                else:
                    self._send(
                        200,
                        {
                            "kind": "PersistentVolumeList",
                            "apiVersion": "v1",
                            "metadata": {"resourceVersion": "1"},
                            "items": stand_in.pvs,
                        },
                    )

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test asserts on `requests` instead."""

        self.server = ThreadingHTTPServer((f"{loopback_subnet(150)}.20", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        host, port = self.server.server_address[:2]
        self.kubeconfig = workdir / "stand-in.kubeconfig"
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "s", "cluster": {"server": f"http://{host!s}:{port}"}}],
                    "users": [{"name": "u", "user": {"token": "stand-in"}}],
                    "contexts": [{"name": "c", "context": {"cluster": "s", "user": "u"}}],
                    "current-context": "c",
                }
            )
        )

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _status(code: int, reason: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": f"stand-in answers {code}",
        "reason": reason,
        "code": code,
    }
