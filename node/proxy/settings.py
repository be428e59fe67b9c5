"""The proxy's settings: one dataclass, filled by `cocoon proxy run` from a config file and flags."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from wrappers import TON


@dataclass
class ClaimPolicy:
    """When the proxy claims from a client channel (node.payments.policy.should_claim)."""
    max_fee_share: float = 0.005        # claim when the fee is at most this share of the payment
    exposure_limit: int = 50 * TON      # ... or when this much is authorized but unclaimed
    safety_margin: int = 600            # ... and always this long before a close notice ends
    claim_fee: int = 25_000_000         # what one claim costs, nanoTON (the fee the policy weighs)


@dataclass
class ProxySettings:
    network: str
    registry: str                        # the registry address
    operator_seed: bytes                 # the operator key: RA-TLS, reports, pays workers
    wallet_private: bytes                # the hot wallet (pytoniq 64-byte key): funds channels, pays fees
    owner: Optional[str] = None          # the proxy owner's address (default: the hot wallet's)
    state_dir: Path = Path(".cocoon/proxy")
    api_key: Optional[str] = None
    wallet_version: str = "v4r2"
    clients_host: str = "127.0.0.1"
    clients_port: int = 8443
    workers_host: str = "127.0.0.1"
    workers_port: int = 8444
    public_endpoint: Optional[str] = None  # as registered; default "clients_host:port workers_host:port"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9102
    tee: str = "simulated"               # "simulated" or "tdx"
    dev_root: Optional[Path] = None      # simulated TEE: the development root directory
    image: str = "proxy-image"           # simulated TEE: the image name its measurements derive from
    measurements: Optional[Path] = None  # simulated TEE: this image's measurements (JSON), instead
    pccs_url: Optional[str] = None       # tdx: where verifiers fetch collateral
    claim: ClaimPolicy = field(default_factory=ClaimPolicy)
    worker_deposit: int = 2 * TON        # the first deposit of a channel to a worker
    worker_top_up_below: int = TON // 2  # top up when the deposit minus the pay signed falls below this
    settle_grace: float = 300.0          # seconds a client has to settle before it is held to its cap
    epoch: float = 3600.0                # seconds between reputation reports
    refresh: float = 30.0                # seconds between registry refreshes (revocations, stakes)
    settle_every: float = 10.0           # seconds between settlement passes (caps, claims, close watch)
    job_timeout: float = 300.0           # seconds a job may run
    max_output_tokens: int = 512         # what /v1/models advertises; the gateway fills max_tokens with it
    max_body: int = 1 << 20              # bytes of a request body

    @property
    def endpoint(self) -> str:
        from node.link.endpoint import format_endpoint

        return self.public_endpoint or format_endpoint(self.clients_host, self.clients_port,
                                                       self.workers_host, self.workers_port)

    @property
    def ledger_path(self) -> Path:
        return Path(self.state_dir) / "proxy.sqlite"
