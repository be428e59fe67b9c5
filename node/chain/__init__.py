"""Chain access for services and the CLI: async, no click.

    from node.chain import open_network, load_keys, CocoonError
    from wrappers.registry import Registry

    net = await open_network("local")              # "embedded" | "local" | "http://..." | "testnet" | "mainnet"
    w = await net.wallet(load_keys(mnemonic_file="owner.words"), version="v4r2")  # dev chains: funded, deployed
    txs = await net.send(w, dest, 10**9, body=None, state_init=None, bounce=True,
                         on_progress=lambda waited, timeout: ...)  # waits for the wallet's seqno to move
    reg = net.contract(Registry, registry)           # wrappers' contract objects (wrappers.chain.contract)
    params = await reg.get_params()
    await reg.send_propose(net.sender(w), action)     # a wallet as the sender of send_*
    await net.get_method(addr, "get_version", [])     # pytoniq stack: int, Cell, Slice, None, list
    await net.balance(addr); await net.status(addr); await net.now()
    await net.fund(addr, 5 * 10**9); await net.advance(3600)  # embedded and local chains only
    await net.close()

* ``open_network(name, state_file=None, api_key=None)`` -> :class:`Network`; ``net.provider`` is the
  pytoniq-compatible provider (``raw_get_account_state``, ``get_account_state``, ``run_get_method``,
  ``raw_send_message``); ``net.chain`` is the in-process chain on ``embedded`` (else None); ``net.dev``
  tells whether the faucet and time travel exist.
* ``net.send`` returns the transactions the message caused (``TxRecord``) on the embedded chain and
  the chain server, an empty list on other networks.
* Keys: :func:`load_keys` (key file, mnemonic file, ``COCOON_MNEMONIC``), :func:`keys_from_words`,
  :func:`new_mnemonic`, :func:`write_mnemonic` (mode 0600).
* Every expected failure is a :class:`CocoonError` whose text is a one-line message for the user.
* The chain server (`cocoon chain serve`) is :mod:`node.chain.server` (router), :mod:`.api`
  (toncenter methods), :mod:`.service` (applying inputs, group commit) and :mod:`.store` (SQLite).
"""
from .errors import CocoonError
from .keys import MNEMONIC_ENV, Keys, keys_from_seed, keys_from_words, load_keys, new_mnemonic, write_mnemonic
from .network import (DEV_FUNDING, LOCAL_URL, NETWORKS, WALLET_VERSIONS, Network, check_network, network_global_id,
                      open_network, open_wallet)

__all__ = ["CocoonError", "MNEMONIC_ENV", "Keys", "keys_from_seed", "keys_from_words", "load_keys", "new_mnemonic",
           "write_mnemonic", "DEV_FUNDING", "LOCAL_URL", "NETWORKS", "WALLET_VERSIONS", "Network", "check_network",
           "network_global_id", "open_network", "open_wallet"]
