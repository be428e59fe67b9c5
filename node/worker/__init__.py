"""The worker: serves one model inside the TEE, signs a receipt for every job, and is paid by voucher.

- :mod:`.settings`: what ``cocoon worker run`` is told (config file and flags);
- :mod:`.engines`: in-process llama-cpp-python and any OpenAI-compatible HTTP engine;
- :mod:`.serving`: one job from request bytes to chunks, answer, usage and signed receipt;
- :mod:`.store`: the SQLite state (receipts, vouchers, claims);
- :mod:`.link`: the WebSocket to the proxy over mutual RA-TLS;
- :mod:`.chain`: start-up checks, the registry snapshot and claims;
- :mod:`.metrics` and :mod:`.app`: ``/metrics`` and the service's assembly.
"""
