"""One object per contract over a provider: the shape of pytoniq's contracts and Blueprint's wrappers.

    reg = Registry(provider, address)                       # a deployed contract
    reg = Registry.from_init(provider, owner, params, codes, lang="tolk")  # the address derived
    await reg.send_deploy(via, value)                       # async send_* through a sender
    params = await reg.get_params()                         # async get_* parse the getters

``provider`` is anything with pytoniq's provider interface (``run_get_method``,
``raw_get_account_state``): :class:`~wrappers.chain.provider.EmbeddedProvider` (the embedded chain),
:class:`~wrappers.chain.http.ToncenterProvider` (the chain server, toncenter) or pytoniq's
``LiteBalancer``. ``via`` is a :class:`Sender`: the embedded chain's treasuries are senders, and
:meth:`node.chain.Network.sender` makes one of a wallet on any network.

On the embedded chain nothing a contract object does ever waits, so synchronous code (tests, the
story of :mod:`node.lifecycle`) drives it with :func:`run` or :class:`Instant`. :func:`reader_class`
makes the synchronous readers (``RegistryReader(call, address)``...) from a contract class, so
getters are parsed in one place.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional, Protocol, Union

from pytoniq_core import Address, Cell
from pytoniq_core.tlb.account import StateInit


class Sender(Protocol):
    """What sends a contract's messages (Blueprint's ``Sender``): a wallet on some network."""
    address: Address

    async def send_message(self, dest: Address, value: int, body: Optional[Cell] = None, *,
                           state_init: Optional[StateInit] = None, bounce: bool = True) -> list:
        """Send one internal message; returns the transactions it caused where the network can tell
        (:class:`~wrappers.chain.records.TxRecord`), else an empty list."""


def account_state(acc) -> tuple[str, Optional[Cell], Optional[Cell]]:
    """(status, code, data) of a pytoniq account (None: no such account); status is 'nonexist',
    'uninit', 'active' or 'frozen'. The one reading of an account's state, for any provider."""
    if acc is None:
        return "nonexist", None, None
    st = acc.storage.state
    if st.type_ == "account_active":
        return "active", st.state_init.code, st.state_init.data
    return ("frozen" if st.type_ == "account_frozen" else "uninit"), None, None


def address_of(init: StateInit, workchain: int = 0) -> Address:
    return Address((workchain, init.serialize().hash))


class Contract:
    """A contract at ``address`` over ``provider``; ``init`` is its StateInit when known (``from_init``)."""

    #: attach ``init`` to a message when the account is not active yet (contracts deployed by their
    #: first message, such as a stake's first deposit)
    DEPLOYS_ON_SEND = False
    #: the value a message carries when the caller names none
    SEND_VALUE = 50_000_000

    def __init__(self, provider, address: Union[Address, str], init: Optional[StateInit] = None):
        self.provider = provider
        self.address = Address(address) if isinstance(address, str) else address
        self.init = init

    @property
    def state_init(self) -> Optional[StateInit]:
        return self.init

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address.to_str()})"

    # ------------------------------------------------------------------ reading
    async def get(self, method: Union[str, int], *args) -> list:
        """Run a get-method; the stack comes back in pytoniq's form (int, Cell, Slice, None, list)."""
        return await self.provider.run_get_method(self.address, method, list(args))

    async def get_account(self) -> tuple[str, Optional[Cell], Optional[Cell]]:
        """(status, code, data); status is 'nonexist', 'uninit', 'active' or 'frozen'."""
        acc, _ = await self.provider.raw_get_account_state(self.address)
        return account_state(acc)

    async def get_status(self) -> str:
        return (await self.get_account())[0]

    async def is_deployed(self) -> bool:
        return await self.get_status() == "active"

    async def get_balance(self) -> int:
        acc, _ = await self.provider.raw_get_account_state(self.address)
        return 0 if acc is None else acc.storage.balance.grams

    async def get_data_hash(self) -> Optional[bytes]:
        data = (await self.get_account())[2]
        return None if data is None else data.hash

    # ------------------------------------------------------------------ sending
    async def send(self, via: Sender, value: Optional[int] = None, body: Optional[Cell] = None, *,
                   bounce: bool = True, deploy: Optional[bool] = None) -> list:
        """Send ``body`` with ``value`` from ``via``. ``deploy``: attach ``init`` (True), never (False),
        or when the account is not active yet and the contract deploys on its first message (None)."""
        if deploy is None:
            deploy = self.DEPLOYS_ON_SEND and self.init is not None and not await self.is_deployed()
        if deploy and self.init is None:
            raise ValueError(f"{type(self).__name__} at {self.address.to_str()}: no StateInit to deploy "
                             "(construct it with from_init)")
        return await via.send_message(self.address, self.SEND_VALUE if value is None else value, body,
                                      state_init=self.init if deploy else None, bounce=bounce)


# ---------------------------------------------------------------------- synchronous use
def run(coro) -> Any:
    """The result of a coroutine that never waits (every call on the embedded chain), without an
    event loop. A coroutine that does wait (a network) raises RuntimeError: await it instead."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("this call waits on a network: await it instead of running it synchronously")


def _getter(contract_cls: type, name: str) -> Optional[str]:
    """The coroutine getter of ``contract_cls`` behind the reader name ``name``: ``get_<name>``, or
    ``name`` itself for predicates (``is_allowed``, ``serves_with``)."""
    for candidate in (f"get_{name}", name):
        if inspect.iscoroutinefunction(getattr(contract_cls, candidate, None)):
            return candidate
    return None


class _CallProvider:
    """A provider whose get-methods answer through a synchronous ``call(address, method, stack)``."""

    def __init__(self, call: Callable[..., list]):
        self.call = call

    async def run_get_method(self, address, method, stack) -> list:
        return self.call(address, method, stack)


def reader_class(contract_cls: type, names: tuple[str, ...], doc: str = "") -> type:
    """A synchronous reader over ``call(address, method, stack) -> list``: ``reader.params()`` is
    ``await contract.get_params()``, for synchronous callers (RA-TLS registry checks, the CLI's checks)."""

    def __init__(self, call, address: Address):
        self.call, self.address = call, address
        self.contract = contract_cls(_CallProvider(call), address)

    ns: dict[str, Any] = {"__init__": __init__, "__doc__": doc or f"Reads a {contract_cls.__name__} synchronously."}
    for name in names:
        target = _getter(contract_cls, name)
        if target is None:
            raise TypeError(f"{contract_cls.__name__} has no getter for {name!r}")

        def method(self, *args, _t=target, **kwargs):
            return run(getattr(self.contract, _t)(*args, **kwargs))

        method.__name__ = name
        method.__doc__ = getattr(contract_cls, target).__doc__
        ns[name] = method
    return type(contract_cls.__name__ + "Reader", (), ns)


class Instant:
    """A contract object used synchronously: ``read.params()`` runs ``get_params``, ``send(wallet,
    body, value)`` runs ``send``, ``send_deposit(...)`` (or ``deposit(...)``) runs it, ``balance`` and ``data_hash`` read
    the account. ``runner`` runs each coroutine: :func:`run` (the embedded chain, the default) or a
    loop's (the CLI's ``ctx.call``, on any network). Everything else is the contract's own attribute."""

    def __init__(self, contract: Contract, runner: Callable[[Any], Any] = None):
        self.contract = contract
        self.runner = runner or run
        self.read = _InstantRead(contract, self.runner)

    @property
    def chain(self):
        return self.contract.provider.chain

    @property
    def balance(self) -> int:
        return self.runner(self.contract.get_balance())

    @property
    def data_hash(self) -> Optional[bytes]:
        return self.runner(self.contract.get_data_hash())

    @property
    def deployed(self) -> bool:
        return self.runner(self.contract.is_deployed())

    def send(self, wallet: Sender, body: Optional[Cell] = None, value: Optional[int] = None, deploy: bool = False,
             bounce: bool = True) -> list:
        return self.runner(self.contract.send(wallet, value, body, bounce=bounce, deploy=True if deploy else None))

    def __getattr__(self, name: str) -> Any:
        if not hasattr(self.contract, name) and inspect.iscoroutinefunction(getattr(self.contract, f"send_{name}", None)):
            name = f"send_{name}"  # esc.claim(wallet, voucher) runs send_claim
        attr = getattr(self.contract, name)
        if inspect.iscoroutinefunction(attr):
            @functools.wraps(attr)
            def now(*args, **kwargs):
                return self.runner(attr(*args, **kwargs))
            return now
        return attr


class _InstantRead:
    def __init__(self, contract: Contract, runner: Callable[[Any], Any]):
        self._contract, self._runner = contract, runner

    @property
    def address(self) -> Address:
        return self._contract.address

    def __getattr__(self, name: str) -> Callable:
        target = _getter(type(self._contract), name)
        if target is None:
            raise AttributeError(f"{type(self._contract).__name__} has no getter for {name!r}")
        attr = getattr(self._contract, target)
        return lambda *args, **kwargs: self._runner(attr(*args, **kwargs))
