"""The toncenter v2 methods of the chain server, over a :class:`~node.chain.service.ChainService`.

Each method takes the request's parameters (a dict of JSON values, from a JSON-RPC call, a query
string or a JSON body) and returns toncenter's ``result``; a bad parameter raises :class:`ApiError`
with toncenter's code. Shapes are those of :mod:`wrappers.chain.toncenter`.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable, Optional

from pytoniq_core import Address, Cell
from pytoniq_core.tlb.account import StateInit

from wrappers.chain import toncenter as T
from wrappers.chain.emulated import addr_key
from wrappers.chain.cells import to_tonpy
from wrappers.chain.getmethod import GetMethodError, run_get_method

from .service import ChainService, Refused

MAX_LIMIT = 100


class ApiError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _need(params: dict, name: str) -> Any:
    v = params.get(name)
    if v is None or v == "":
        raise ApiError(422, f"missing required parameter {name!r}")
    return v


def _int(params: dict, name: str, default: Optional[int] = None, lo: int = 0, hi: int = 2**64) -> Optional[int]:
    v = params.get(name)
    if v is None or v == "":
        if default is None:
            raise ApiError(422, f"missing required parameter {name!r}")
        return default
    try:
        n = int(v) if not isinstance(v, bool) else None
    except (TypeError, ValueError):
        n = None
    if n is None or not lo <= n <= hi:
        raise ApiError(422, f"parameter {name!r} must be an integer between {lo} and {hi}")
    return n


def _addr(params: dict, name: str = "address") -> Address:
    try:
        return T.parse_address(_need(params, name), name)
    except T.FormatError as e:
        raise ApiError(416, str(e)) from None


class Methods:
    def __init__(self, svc: ChainService):
        self.svc = svc
        self._cache: dict[str, tuple] = {}
        self._config_t = None
        self.table: dict[str, Callable[[dict], Awaitable[Any]]] = {
            "getAddressInformation": self.getAddressInformation,
            "getExtendedAddressInformation": self.getExtendedAddressInformation,
            "getWalletInformation": self.getWalletInformation,
            "getAddressBalance": self.getAddressBalance,
            "getAddressState": self.getAddressState,
            "getTransactions": self.getTransactions,
            "runGetMethod": self.runGetMethod,
            "sendBoc": self.sendBoc,
            "sendBocReturnHash": self.sendBocReturnHash,
            "estimateFee": self.estimateFee,
            "getMasterchainInfo": self.getMasterchainInfo,
            "getConfigParam": self.getConfigParam,
            "tryLocateResultTx": self.tryLocateResultTx,
            "tryLocateSourceTx": self.tryLocateSourceTx,
            "tryLocateTx": self.tryLocateResultTx,
        }

    async def call(self, method: str, params: dict) -> Any:
        f = self.table.get(method)
        if f is None:
            raise ApiError(404, f"method {method!r} is not served here; served: {', '.join(sorted(self.table))}")
        if not isinstance(params, dict):
            raise ApiError(422, "params must be an object")
        try:
            return await f(params)
        except T.FormatError as e:
            raise ApiError(400, str(e)) from None
        except Refused as e:
            raise ApiError(400, str(e)) from None

    # ------------------------------------------------------------------ accounts
    def _account(self, a: Address) -> dict:
        """The account parsed once per state (wallets poll their seqno and state often)."""
        chain = self.svc.chain
        key = addr_key(a)
        raw = chain.accounts.get(key)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is raw:
            return hit[1]
        sa = chain.shard_account(a)
        status, code, data, frozen = "nonexist", None, None, None
        lt, h = 0, b"\0" * 32
        if sa is not None and sa.account is not None:
            lt, h = sa.last_trans_lt, sa.last_trans_hash
            st = sa.account.storage.state
            if st.type_ == "account_active":
                status, code, data = "active", st.state_init.code, st.state_init.data
            elif st.type_ == "account_frozen":
                status, frozen = "frozen", st.state_hash
            else:
                status = "uninit"
        acc = {"status": status, "balance": chain.balance(a), "code": code, "data": data, "lt": lt, "hash": h,
               "frozen_hash": frozen}
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (raw, acc)
        return acc

    def _sync(self) -> dict:
        return {"block_id": T.block_id(self.svc.block), "sync_utime": self.svc.chain.now}

    async def getAddressInformation(self, p: dict) -> dict:
        acc = self._account(_addr(p))
        return {"@type": "raw.fullAccountState", "balance": str(acc["balance"]), "extra_currencies": [],
                "code": T.b64(acc["code"].to_boc()) if acc["code"] is not None else "",
                "data": T.b64(acc["data"].to_boc()) if acc["data"] is not None else "",
                "last_transaction_id": T.tx_id(acc["lt"], acc["hash"]), **self._sync(),
                "frozen_hash": T.b64(acc["frozen_hash"]) if acc["frozen_hash"] else "",
                "state": T.STATE_NAMES[acc["status"]]}

    def _wallet(self, acc: dict) -> Optional[dict]:
        from pytoniq.contract.wallets.wallet import WALLET_V4_R2_CODE
        from pytoniq.contract.wallets.wallet_v5 import WALLET_V5_R1_CODE

        code, data = acc["code"], acc["data"]
        if code is None or data is None:
            return None
        s = data.begin_parse()
        if code.hash == WALLET_V4_R2_CODE.hash:
            seqno, wallet_id = s.load_uint(32), s.load_uint(32)
            return {"type": "wallet v4 r2", "tl": "wallet.v4.accountState", "seqno": seqno, "wallet_id": wallet_id}
        if code.hash == WALLET_V5_R1_CODE.hash:
            s.load_bit()
            seqno, wallet_id = s.load_uint(32), s.load_int(32)
            return {"type": "wallet v5 r1", "tl": "wallet.v5.accountState", "seqno": seqno, "wallet_id": wallet_id}
        return None

    async def getExtendedAddressInformation(self, p: dict) -> dict:
        a = _addr(p)
        acc = self._account(a)
        w = self._wallet(acc)
        if w is not None:
            state = {"@type": w["tl"], "wallet_id": str(w["wallet_id"]), "seqno": w["seqno"]}
        elif acc["status"] == "active":
            state = {"@type": "raw.accountState", "code": T.b64(acc["code"].to_boc()),
                     "data": T.b64(acc["data"].to_boc()), "frozen_hash": ""}
        else:
            state = {"@type": "uninited.accountState",
                     "frozen_hash": T.b64(acc["frozen_hash"]) if acc["frozen_hash"] else ""}
        return {"@type": "fullAccountState", "address": {"@type": "accountAddress", "account_address": T.friendly(a)},
                "balance": str(acc["balance"]), "extra_currencies": [],
                "last_transaction_id": T.tx_id(acc["lt"], acc["hash"]), **self._sync(),
                "account_state": state, "revision": 0}

    async def getWalletInformation(self, p: dict) -> dict:
        acc = self._account(_addr(p))
        w = self._wallet(acc)
        out = {"wallet": w is not None, "balance": str(acc["balance"]), "extra_currencies": [],
               "account_state": T.STATE_NAMES[acc["status"]],
               "last_transaction_id": T.tx_id(acc["lt"], acc["hash"])}
        if w is not None:
            out.update(wallet_type=w["type"], seqno=w["seqno"], wallet_id=w["wallet_id"])
        return out

    async def getAddressBalance(self, p: dict) -> str:
        return str(self.svc.chain.balance(_addr(p)))

    async def getAddressState(self, p: dict) -> str:
        return T.STATE_NAMES[self._account(_addr(p))["status"]]

    # ------------------------------------------------------------------ transactions
    async def getTransactions(self, p: dict) -> list:
        a = _addr(p)
        limit = _int(p, "limit", 10, 1, MAX_LIMIT)
        lt = _int(p, "lt", -1, 0) if p.get("lt") not in (None, "") else None
        h = T.parse_hash(p["hash"], "hash") if p.get("hash") not in (None, "") else None
        if h is not None and lt is None:
            raise ApiError(422, "hash needs lt")
        to_lt = _int(p, "to_lt", 0, 0)
        rows = self.svc.store.transactions(addr_key(a), limit, lt, h, to_lt)
        return [T.transaction_json(Address(acc), boc) for acc, boc in rows]

    async def _locate(self, p: dict):
        src, dest = _addr(p, "source"), _addr(p, "destination")
        created_lt = _int(p, "created_lt")
        row = self.svc.store.result_tx(addr_key(src), addr_key(dest), created_lt)
        if row is None:
            raise ApiError(404, "transaction not found: no message from source to destination with that created_lt")
        return row

    async def tryLocateResultTx(self, p: dict) -> dict:
        acc, boc, _parent = await self._locate(p)
        return T.transaction_json(Address(acc), boc)

    async def tryLocateSourceTx(self, p: dict) -> dict:
        _acc, _boc, parent = await self._locate(p)
        row = self.svc.store.tx_by_hash(parent) if parent is not None else None
        if row is None:
            raise ApiError(404, "transaction not found: the message was not sent by a transaction (faucet)")
        return T.transaction_json(Address(row[0]), row[1])

    # ------------------------------------------------------------------ get-methods
    async def runGetMethod(self, p: dict) -> dict:
        a = _addr(p)
        method = _need(p, "method")
        if isinstance(method, str) and method.lstrip("-").isdigit():
            method = int(method)
        if not isinstance(method, (str, int)) or isinstance(method, bool):
            raise ApiError(422, "method must be a name or a method id")
        stack = p.get("stack") or []
        if isinstance(stack, str):
            import json

            try:
                stack = json.loads(stack)
            except ValueError:
                raise ApiError(400, "stack must be a JSON list of [type, value] pairs") from None
        args = T.request_stack_from_json(stack)
        acc = self._account(a)
        base = {"@type": "smc.runResult", "block_id": T.block_id(self.svc.block),
                "last_transaction_id": T.tx_id(acc["lt"], acc["hash"])}
        if acc["status"] != "active":  # no code to run: what tonlib answers for an account without one
            return {**base, "gas_used": 0, "stack": [], "exit_code": -256}
        if "tvm" not in acc:  # the emulator's cells, once per account state
            acc["tvm"] = (to_tonpy(acc["code"]), to_tonpy(acc["data"]))
        if self._config_t is None:
            self._config_t = to_tonpy(self.svc.chain.config)
        gas: list = []
        try:
            result = run_get_method(acc["tvm"][0], acc["tvm"][1], a, method, args, balance=acc["balance"],
                                    now=self.svc.chain.now, config=self._config_t, gas=gas)
        except GetMethodError as e:
            return {**base, "gas_used": gas[0] if gas else 0, "stack": [], "exit_code": e.exit_code}
        return {**base, "gas_used": gas[0], "stack": T.result_stack_to_json(result), "exit_code": 0}

    # ------------------------------------------------------------------ sending
    async def sendBoc(self, p: dict) -> dict:
        await self.svc.send_message(T.unb64(_need(p, "boc"), "boc"))
        return {"@type": "ok"}

    async def sendBocReturnHash(self, p: dict) -> dict:
        raw = T.unb64(_need(p, "boc"), "boc")
        await self.svc.send_message(raw)
        cell = Cell.one_from_boc(raw)
        return {"@type": "raw.extMessageInfo", "hash": T.b64(cell.hash), "hash_norm": T.b64(T.normalized_hash(cell))}

    async def estimateFee(self, p: dict) -> dict:
        """Runs the message on a snapshot of the chain, which is then restored."""
        a = _addr(p)
        body = T.boc_cell(_need(p, "body"), "body")
        init = None
        code = p.get("init_code") or ""
        data = p.get("init_data") or ""
        if code or data:
            init = StateInit(code=T.boc_cell(code, "init_code") if code else None,
                             data=T.boc_cell(data, "init_data") if data else None)
        ignore = str(p.get("ignore_chksig", "true")).lower() not in ("false", "0")
        chain = self.svc.chain
        snap = chain.snapshot()
        emu = chain._emu
        try:
            if ignore:
                emu.set_ignore_chksig(True)
            txs = chain.send(chain.external(a, body, init))
        finally:
            if ignore:
                emu.set_ignore_chksig(False)
            chain.restore(snap)
        if not txs or txs[0].rejected:
            raise ApiError(400, "cannot estimate: the account does not accept this external message")
        t = txs[0]
        in_fwd = max(0, t.total_fees - t.storage_fees - t.gas_fees - t.action_fees)
        fees = {"@type": "fees", "in_fwd_fee": in_fwd, "storage_fee": t.storage_fees, "gas_fee": t.gas_fees,
                "fwd_fee": t.fwd_fees}
        dest = [{"@type": "fees", "in_fwd_fee": 0, "storage_fee": c.storage_fees, "gas_fee": c.gas_fees,
                 "fwd_fee": c.fwd_fees} for c in txs[1:]]
        return {"@type": "query.fees", "source_fees": fees, "destination_fees": dest}

    # ------------------------------------------------------------------ blocks and config
    async def getMasterchainInfo(self, p: dict) -> dict:
        last = T.block_id(self.svc.block)
        return {"@type": "blocks.masterchainInfo", "last": last, "state_root_hash": last["root_hash"],
                "init": T.block_id(0)}

    async def getConfigParam(self, p: dict) -> dict:
        from pytoniq_core import HashMap

        n = _int(p, "config_id", None, -2**31, 2**31 - 1)
        params = HashMap.parse(self.svc.chain.config.begin_parse(), 32, lambda k: int(k, 2), lambda s: s.load_ref())
        if n not in params:
            raise ApiError(404, f"config parameter {n} is not set on this chain")
        return {"@type": "configInfo", "config": {"@type": "tvm.cell", "bytes": T.b64(params[n].to_boc())}}

