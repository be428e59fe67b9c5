"""One process sending transfers through `node.chain` to a chain server (used by the tests).

usage: python -m tests.chain.sender URL SEED_HEX COUNT DEST -> prints {"address", "sent", "seqno"}
"""
from __future__ import annotations

import asyncio
import json
import sys

from pytoniq_core import Address


async def main(url: str, seed: str, count: int, dest: str) -> None:
    from node.chain import keys_from_seed, open_network

    net = await open_network(url)
    try:
        w = await net.wallet(keys_from_seed(bytes.fromhex(seed)))
        for _ in range(count):
            await net.send(w, Address(dest), 10**7, bounce=False)
        print(json.dumps({"address": w.address.to_str(), "sent": count, "seqno": await w.get_seqno()}))
    finally:
        await net.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
