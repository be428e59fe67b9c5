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


class SignedWallet:
    """A standard v4r2 wallet whose messages are signed ahead (seqno by seqno), for bursts of sends."""

    WALLET_ID = 698983191

    def __init__(self, seed: int):
        from pytoniq.contract.wallets.wallet import WALLET_V4_R2_CODE, WalletV4
        from pytoniq_core import Address
        from pytoniq_core.tlb.account import StateInit

        from node.chain.keys import keys_from_seed

        k = keys_from_seed(seed.to_bytes(32, "big"))
        self.private = k.private
        self.state_init = StateInit(code=WALLET_V4_R2_CODE, data=WalletV4.create_data_cell(k.public, self.WALLET_ID))
        self.address = Address((0, self.state_init.serialize().hash))

    def external(self, seqno: int, dest=None, value: int = 10**7) -> bytes:
        """The signed external message with ``seqno``: deploys the wallet at 0, else sends ``value`` to ``dest``."""
        from pytoniq import WalletV4R2
        from pytoniq.contract.wallets.wallet import WalletV4
        from pytoniq_core import Cell

        msgs = [] if dest is None else [WalletV4R2.create_wallet_internal_message(
            destination=dest, value=value, body=Cell.empty(), bounce=False)]
        body = WalletV4.raw_create_transfer_msg(self.private, seqno, self.WALLET_ID, msgs, valid_until=2**32 - 1)
        return WalletV4R2.create_external_msg(dest=self.address, state_init=self.state_init if seqno == 0 else None,
                                              body=body).serialize().to_boc()
