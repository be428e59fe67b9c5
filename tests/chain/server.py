"""A chain server process for tests: `cocoon chain serve` on a free port with its state in a folder."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

from tests.procs import COCOON, Proc, Procs, free_port, http_ready


class ChainServer:
    def __init__(self, procs: Procs, state: Path, checkpoint_interval: float = 2.0):
        self.procs, self.state, self.checkpoint_interval = procs, Path(state), checkpoint_interval
        self.proc: Optional[Proc] = None
        self.url = ""
        self.starts = 0

    def start(self) -> "ChainServer":
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.starts += 1
        self.proc = self.procs.start(f"chain{self.starts}", [COCOON, "chain", "serve", "--state", str(self.state),
                                                             "--port", str(port), "--checkpoint-interval",
                                                             str(self.checkpoint_interval)],
                                     ready=http_ready(self.url + "/dev/now"), timeout=60)
        return self

    def kill9(self) -> None:
        self.procs.kill9(self.proc)

    def stop(self) -> int:
        return self.procs.stop(self.proc)

    def request(self, path: str, doc: Any = None, method: Optional[str] = None, raw: Optional[bytes] = None
                ) -> tuple[int, Any]:
        """(HTTP status, parsed JSON body) of one request; ``doc`` is sent as a JSON body."""
        data = raw if raw is not None else (json.dumps(doc).encode() if doc is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method or ("POST" if data is not None else "GET"),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body)
            except ValueError:
                return e.code, body.decode(errors="replace")

    def rpc(self, api_method: str, **params) -> Any:
        status, body = self.request("/api/v2/jsonRPC", {"id": 1, "jsonrpc": "2.0", "method": api_method, "params": params})
        assert status == 200 and body["ok"], body
        return body["result"]

    def fund(self, address: str, amount: int) -> None:
        status, body = self.request("/dev/fund", {"address": address, "amount": amount})
        assert status == 200 and body["ok"], body

    def block(self) -> int:
        return self.rpc("getMasterchainInfo")["last"]["seqno"]
