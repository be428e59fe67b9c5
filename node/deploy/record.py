"""The written record of a deployment: ``<record dir>/<network>-<registry address>.json``.

One file per deployed registry, written after every real run (and every ``--check``) and never by a
dry run. It holds what an operator needs later: the network, the registry's address, the language,
the code hashes of the registry and its child codes (from the committed artifacts, with the artifact
files and the sources hashes), the parameters and trust lists read back from the chain, every
message sent (with the wallet's and the registry's transaction hashes, fees and, for proposals,
their ids), the open proposals, and the result of the last verification.

A re-run keeps what the record says about the deployment itself (language, code hashes, deploy
value, time, the messages sent before) and appends only what it sent; ``config`` names the file of
the latest run, and the verification compares the chain with that file. When a run sends nothing,
only the verification (and its time) and the values read back from the chain are renewed.
"""
from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from pytoniq_core import Address

from wrappers import registry as R

from .config import CHILDREN, DeployConfig
from .plan import Expected, fmt_addr
from .send import Sent
from .verify import Check, Observed, extra_trust, param_items

FORMAT = 1
# fields that describe the deployment itself: written once, kept by later runs
KEPT = ("network", "registry", "registry_raw", "language", "owner", "owner_wallet", "deploy_value", "code_hashes")
DEFAULT_DIR = Path("deployments")


def registry_file(state_file: Path) -> Path:
    """Where the embedded chain remembers the last registry deployed on it (beside its state file);
    ``cocoon registry ...`` reads it when no --registry is given."""
    return Path(state_file).parent / "registry.txt"


def default_dir(network: str, state_file: Optional[Path]) -> Path:
    """Records of the embedded chain live beside its state file (they describe that local chain);
    records of testnet and mainnet in ./deployments, for the operator to keep."""
    return Path(state_file).parent / "deployments" if network == "embedded" and state_file else DEFAULT_DIR


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _slug(network: str) -> str:
    """The network's name as a file-name part (a chain server's URL has slashes and a colon)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", network)


def record_path(record_dir: Path, network: str, address: Address) -> Path:
    return Path(record_dir) / f"{_slug(network)}-{fmt_addr(address, network)}.json"


def load(path: Path) -> Optional[dict]:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else None


def find(record_dir: Path, network: str, owner: Address) -> list[dict]:
    """Records of registries this owner deployed on this network, newest first."""
    out = []
    for p in sorted(Path(record_dir).glob(f"{_slug(network)}-*.json")):
        doc = load(p)
        if doc is None or doc.get("network") != network:
            continue
        try:
            if Address(doc["owner"]) != owner:
                continue
            doc["_address"] = Address(doc["registry"])
        except Exception:
            continue
        doc["_path"] = p
        out.append(doc)
    return sorted(out, key=lambda d: d.get("deployed_at") or "", reverse=True)


def build(old: Optional[dict], cfg: DeployConfig, exp: Expected, obs: Observed, checks: list[Check],
          sent: list[Sent], state_file: Optional[Path]) -> dict:
    """The record after this run: ``old`` (if any) updated with what was read, sent and verified."""
    arts = exp.artifacts
    codes = {"registry": {"code_hash": arts.registry.code_hash, "artifact": arts.path("registry"),
                          "sources_hash": arts.registry.sources_hash,
                          "compiler": f"{arts.registry.compiler} {arts.registry.compiler_version}"}}
    for n in CHILDREN:
        a = arts.children.get(n)
        codes[n] = None if a is None else {"code_hash": a.code_hash, "artifact": arts.path(n),
                                           "sources_hash": a.sources_hash,
                                           "compiler": f"{a.compiler} {a.compiler_version}"}
    doc = {
        "format": FORMAT,
        "network": cfg.network,
        "registry": fmt_addr(obs.address, cfg.network),
        "registry_raw": obs.address.to_str(is_user_friendly=False),
        "language": cfg.language,
        "config": str(cfg.path),
        "owner": fmt_addr(exp.owner, cfg.network),
        "owner_wallet": cfg.owner.wallet,
        "deploy_value": cfg.deploy_value,
        "code_hashes": codes,
        "deployed_at": (old or {}).get("deployed_at"),
        "transactions": list((old or {}).get("transactions", [])),
    }
    if old:
        # what was deployed stays as the record first wrote it; a later file (another language, say)
        # is compared in the verification, it does not rewrite history
        for k in KEPT:
            if k in old:
                doc[k] = old[k]
    if state_file is not None:
        doc["state_file"] = str(state_file)
    if obs.active:
        doc["params"] = {k.removeprefix("params."): v for k, v in param_items(obs.params).items()}
        doc["trust"] = {k: sorted(f"{h:064x}" for h in v) for k, v in obs.trust.items()}
        doc["trust_not_in_config"] = extra_trust(exp, obs)
        doc["open_proposals"] = [{"id": p.id, "execute_after": p.execute_after,
                                  "action": R.describe_action(p.action)} for p in obs.proposals]
        doc["balance"] = obs.balance
    at = now_iso()
    for s in sent:
        if s.message.kind == "deploy" and s.ok:
            doc["deployed_at"] = at
        doc["transactions"].append(dict(s.to_json(), sent_at=at))
    failed = [c.field for c in checks if not c.ok]
    doc["verification"] = {"ok": bool(checks) and not failed, "checked_at": at, "failed": failed,
                           "checks": [c.to_json() for c in checks]}
    return doc


def write(path: Path, doc: dict) -> None:
    """Write atomically (a crash never leaves half a record)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({k: v for k, v in doc.items() if not k.startswith("_")}, indent=2) + "\n")
    os.replace(tmp, path)
