"""The proxy (docs/PROTOCOL.md §3-§6): attested routing, payer-signed accounting, claims and reputation.

- :mod:`.ledger`: the books in SQLite (WAL, synchronous=FULL), written with group commit;
- :mod:`.routing`: which worker serves a request;
- :mod:`.workers`: the workers listener and the link each worker keeps open;
- :mod:`.core`: start-up checks and the serving logic; :mod:`.app`: the aiohttp applications;
- :mod:`.settlement`: caps, claims, worker top-ups and reputation reports;
- :mod:`.chainview`: what the proxy reads from and sends to the chain.
"""
