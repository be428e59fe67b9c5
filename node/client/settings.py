"""The gateway's settings: what ``cocoon client run`` reads from its flags and config file."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from node.payments.pricing import COEF_ONE
from wrappers import TON


@dataclass
class Settings:
    state_dir: Path                       # SQLite state, and nothing else
    registry: str                         # the registry contract's address
    network: str = "local"                # node.chain network name or URL
    api_key_chain: Optional[str] = None   # toncenter API key
    mnemonic_file: Optional[str] = None   # the wallet that funds the escrow (else key_file / COCOON_MNEMONIC)
    key_file: Optional[str] = None
    wallet_version: str = "v4r2"
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: Optional[str] = None         # callers must send "Authorization: Bearer KEY" when set
    budget: int = 1 * TON                 # the most the gateway pays in total (nanoTON)
    deposit: Optional[int] = None         # first deposit and top-up step (default: the whole budget)
    max_coefficient: int = 2 * COEF_ONE   # highest worker coefficient accepted (1000 = 1.0)
    proxy: str = "auto"                   # "auto" or a registered proxy's owner address
    proxy_endpoint: Optional[str] = None  # HOST:PORT to reach the named proxy at (a tunnel); attested all the same
    dev_trust: Optional[str] = None       # development trust JSON: accept the simulated TEE (test registries)
    pccs_url: Optional[str] = None        # collateral for real TDX quotes
    accept_tcb: tuple[str, ...] = ("UpToDate",)
    refresh: float = 30.0                 # seconds between registry refreshes (revocations, proxies)
    stake_ttl: float = 10.0               # seconds a worker's stake reading is reused
    request_timeout: float = 600.0
    open_timeout: float = 120.0           # waiting for the escrow to open on chain
    extra: dict = field(default_factory=dict)
    failpoint: Optional[str] = field(default=None, repr=False)   # crash tests only (COCOON_CLIENT_FAILPOINT)

    @property
    def db_path(self) -> Path:
        return Path(self.state_dir) / "client.sqlite"

    @property
    def deposit_step(self) -> int:
        return self.deposit if self.deposit else self.budget
