"""An async provider over a toncenter-v2 HTTP API: the chain server (`cocoon chain serve`) or
toncenter itself (``api_key``).

It has pytoniq's provider interface (``raw_get_account_state``, ``get_account_state``,
``run_get_method``, ``raw_send_message``, ``get_transactions``), so pytoniq's wallets and the
wrappers run over it unchanged. On the chain server (``dev_available()``) it also reaches the
development endpoints (faucet, time) and, with ``trace=True``, reads back the transactions each sent
message caused into ``last_sent``, as :class:`~wrappers.chain.provider.EmbeddedProvider` does.
"""
from __future__ import annotations

import asyncio
import base64
from typing import Any, Optional, Union

import aiohttp
from pytoniq_core import Address, Cell
from pytoniq_core.tlb.account import (Account, AccountState, AccountStorage, ShardAccount, SimpleAccount,
                                      StateInit, StorageExtraInfo, StorageInfo, StorageUsed)
from pytoniq_core.tlb.block import CurrencyCollection

from . import toncenter as T
from .getmethod import GetMethodError


class ApiError(Exception):
    """The API answered with an error (``code`` is toncenter's, e.g. 400, 404, 429)."""

    def __init__(self, message: str, code: int = 0):
        super().__init__(message)
        self.code = code


class ToncenterProvider:
    def __init__(self, url: str, api_key: Optional[str] = None, timeout: float = 30.0, trace: bool = False,
                 retries: int = 3):
        self.url = url.rstrip("/")
        if self.url.endswith("/jsonRPC"):
            self.url = self.url[: -len("/jsonRPC")]
        if not self.url.endswith("/api/v2"):
            self.base, self.url = self.url, self.url + "/api/v2"
        else:
            self.base = self.url[: -len("/api/v2")]
        self.api_key, self.timeout, self.trace, self.retries = api_key, timeout, trace, retries
        self.last_sent: list = []
        self._session: Optional[aiohttp.ClientSession] = None

    # ------------------------------------------------------------------ transport
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"X-API-Key": self.api_key} if self.api_key else {}
            self._session = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout),
                                                  connector=aiohttp.TCPConnector(limit=64))
        return self._session

    async def _post(self, url: str, doc: dict) -> Any:
        for attempt in range(self.retries + 1):
            async with self._http().post(url, json=doc) as r:
                try:
                    body = await r.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    raise ApiError(f"HTTP {r.status} from {url} (not a toncenter answer)", r.status) from None
            if r.status == 429 and attempt < self.retries:  # toncenter's rate limit: wait and retry
                await asyncio.sleep(1.0 + attempt)
                continue
            if not isinstance(body, dict) or not body.get("ok"):
                err = body.get("error") if isinstance(body, dict) else None
                raise ApiError(str(err or f"HTTP {r.status}"), (body.get("code") if isinstance(body, dict) else 0)
                               or r.status)
            return body["result"]

    async def call(self, api_method: str, **params) -> Any:
        """One toncenter method through ``POST /api/v2/jsonRPC``."""
        return await self._post(self.url + "/jsonRPC",
                                {"id": 1, "jsonrpc": "2.0", "method": api_method,
                                 "params": {k: v for k, v in params.items() if v is not None}})

    # ------------------------------------------------------------------ pytoniq's provider interface
    async def raw_get_account_state(self, address: Union[str, Address], block=None
                                    ) -> tuple[Optional[Account], Optional[ShardAccount]]:
        a = Address(address) if isinstance(address, str) else address
        info = await self.call("getAddressInformation", address=a.to_str())
        return account_from_info(a, info)

    async def get_account_state(self, address: Union[str, Address]) -> SimpleAccount:
        a = Address(address) if isinstance(address, str) else address
        return SimpleAccount.from_raw((await self.raw_get_account_state(a))[0], a)

    async def run_get_method(self, address: Union[str, Address], method: Union[int, str], stack: list,
                             block=None) -> list:
        a = Address(address) if isinstance(address, str) else address
        r = await self.call("runGetMethod", address=a.to_str(), method=method,
                            stack=T.request_stack_to_json(list(stack or [])))
        if r.get("exit_code") not in (0, 1):
            raise GetMethodError(a, method, r.get("exit_code"))
        return T.result_stack_from_json(r.get("stack") or [])

    async def raw_send_message(self, message: bytes) -> int:
        r = await self.call("sendBocReturnHash", boc=base64.b64encode(message).decode())
        self.last_sent = []
        if self.trace:
            self.last_sent = await self.dev_trace(base64.b64decode(r["hash"]))
        return 1

    async def get_transactions(self, address: Union[str, Address], count: int, from_lt: Optional[int] = None,
                               from_hash: Optional[bytes] = None, to_lt: int = 0, **_) -> list:
        """pytoniq's ``Transaction`` objects, newest first."""
        from pytoniq_core.tlb.transaction import Transaction

        a = Address(address) if isinstance(address, str) else address
        out: list = []
        lt, h = from_lt, from_hash
        while len(out) < count:
            batch = await self.call("getTransactions", address=a.to_str(), limit=min(100, count - len(out) + (1 if lt else 0)),
                                    lt=str(lt) if lt else None, hash=h.hex() if h else None, to_lt=str(to_lt) if to_lt else None)
            if out and batch and batch[0]["transaction_id"]["lt"] == str(lt):
                batch = batch[1:]
            if not batch:
                break
            for t in batch:
                out.append(Transaction.deserialize(Cell.one_from_boc(base64.b64decode(t["data"])).begin_parse()))
            last = batch[-1]["transaction_id"]
            lt, h = int(last["lt"]), base64.b64decode(last["hash"])
        return out[:count]

    async def get_masterchain_info(self) -> dict:
        return await self.call("getMasterchainInfo")

    # ------------------------------------------------------------------ the chain server's development endpoints
    async def _dev(self, path: str, doc: Optional[dict] = None) -> Any:
        if doc is None:
            async with self._http().get(self.base + path) as r:
                body = await r.json(content_type=None)
            if not body.get("ok"):
                raise ApiError(str(body.get("error")), body.get("code") or r.status)
            return body["result"]
        return await self._post(self.base + path, doc)

    async def dev_available(self) -> bool:
        """Whether this API is the chain server (it has the faucet and time travel)."""
        try:
            async with self._http().get(self.base + "/dev/now") as r:
                if r.status != 200:
                    return False
                body = await r.json(content_type=None)
            return bool(isinstance(body, dict) and body.get("ok") and "now" in body.get("result", {}))
        except (aiohttp.ContentTypeError, ValueError):
            return False

    async def dev_now(self) -> int:
        return (await self._dev("/dev/now"))["now"]

    async def dev_fund(self, address: Address, amount: int) -> None:
        await self._dev("/dev/fund", {"address": address.to_str(), "amount": amount})

    async def dev_advance(self, seconds: int) -> int:
        return (await self._dev("/dev/advance", {"seconds": seconds}))["now"]

    async def dev_trace(self, msg_hash: bytes) -> list:
        """The transactions an external message caused, as TxRecords (parents and children linked)."""
        async with self._http().get(self.base + "/dev/trace", params={"hash": msg_hash.hex()}) as r:
            body = await r.json(content_type=None)
        if not body.get("ok"):
            return []
        return records_from_bocs([(Address(t["account"]), base64.b64decode(t["boc"]))
                                  for t in body["result"]["transactions"]])

    # ------------------------------------------------------------------ lifecycle
    async def start_up(self) -> None:
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def close_all(self) -> None:
        await self.close()


def account_from_info(a: Address, info: dict) -> tuple[Optional[Account], Optional[ShardAccount]]:
    """pytoniq's Account from ``getAddressInformation`` (toncenter does not serve the raw account)."""
    balance = int(info.get("balance") or 0)
    state = info.get("state")
    lt = int(info["last_transaction_id"]["lt"])
    if state == "uninitialized" and balance == 0 and lt == 0:
        return None, None
    if state == "active":
        si = StateInit(code=Cell.one_from_boc(base64.b64decode(info["code"])) if info.get("code") else None,
                       data=Cell.one_from_boc(base64.b64decode(info["data"])) if info.get("data") else None)
        st = AccountState("account_active", state_init=si)
    elif state == "frozen":
        st = AccountState("account_frozen", state_hash=base64.b64decode(info.get("frozen_hash") or T.ZERO_HASH))
    else:
        st = AccountState("account_uninit")
    storage = AccountStorage(lt, CurrencyCollection(grams=balance, other=None), st)
    acc = Account(a, StorageInfo(StorageUsed(0, 0), StorageExtraInfo("storage_extra_none"), 0, None), storage)
    last_hash = base64.b64decode(info["last_transaction_id"]["hash"])
    return acc, ShardAccount(acc, last_hash, lt)


def records_from_bocs(txs: list[tuple[Address, bytes]]) -> list:
    """TxRecords from transaction BoCs, linked parent to child by message hash, in logical-time order."""
    from tonpy.types import Cell as TCell

    from .fastparse import message_head, transaction_facts
    from .records import record_from_facts

    recs = []
    by_out: dict[bytes, object] = {}
    for acc, boc in txs:
        tx_t = TCell(base64.b64encode(boc).decode())
        facts = transaction_facts(tx_t)
        in_t = facts.in_msg
        head = message_head(in_t)
        rec = record_from_facts(facts, head, acc, in_t, tx_t)
        parent = by_out.get(bytes.fromhex(in_t.get_hash()))
        if parent is not None:
            rec.parent = parent
            parent.children.append(rec)
        for c in facts.out_msgs:
            by_out[bytes.fromhex(c.get_hash())] = rec
        recs.append(rec)
    return recs

