"""TEE attestation: TDX quotes, their verification against the registry, and RA-TLS.

Modules, one job each:

- :mod:`.quote`            parse a quote (dcap-qvl), measurements, image hash
- :mod:`.claims`           versioned claims and report data = SHA-512(claims)
- :mod:`.providers`        quotes from configfs-tsm (real TDX) or the simulated TEE
- :mod:`.simulated`        the simulated TEE and its development root (test networks only)
- :mod:`.collateral`       DCAP collateral from a file or a PCCS, cached
- :mod:`.verify`           dcap-qvl verification plus our policy, one named check each
- :mod:`.cache`            verdict cache keyed by quote hash
- :mod:`.certs`            RA-TLS certificates (quote and claims in critical extensions)
- :mod:`.ratls`            SSL contexts and aiohttp server/client integration
- :mod:`.registry_source`  registry snapshots and their refresh; revocation drops connections
"""
