"""The devnet's state file (``DIR/devnet.json``): what was started, by pid, and who is who.

Each process is recorded with its pid and its start time as the kernel tells it (``/proc/PID/stat``
field 22), so ``down`` stops exactly what ``up`` started and never a process that later took the
same pid.
"""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

FORMAT = 1


def start_ticks(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    rest = stat[stat.rindex(")") + 2:].split()
    try:
        if rest[0] == "Z":  # a zombie has exited already
            return None
        return int(rest[19])
    except (IndexError, ValueError):
        return None


@dataclass
class ProcRecord:
    name: str            # chain, proxy, worker-1, ..., client
    role: str            # chain | proxy | worker | client
    pid: int
    ticks: Optional[int]  # start time (see start_ticks)
    argv: list[str]
    log: str
    url: str = ""        # what it serves (chain API, client/worker listeners, OpenAI base URL)
    metrics: str = ""    # its /metrics URL
    state_dir: str = ""  # its state folder
    address: str = ""    # the wallet (owner) address that holds its money
    extra: dict = field(default_factory=dict)

    def alive(self) -> bool:
        t = start_ticks(self.pid)
        return t is not None and (self.ticks is None or t == self.ticks)

    def stop(self, grace: float = 10.0) -> str:
        """SIGTERM to its process group, SIGKILL after ``grace`` seconds. Returns what happened."""
        if not self.alive():
            return "not running"
        _signal(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not self.alive():
                return "stopped"
            time.sleep(0.05)
        _signal(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        return "killed" if not self.alive() else "still running"

    def kill9(self) -> None:
        """The crash: SIGKILL, no clean-up of any kind."""
        if self.alive():
            _signal(self.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.02)


def _signal(pid: int, sig: int) -> None:
    """To the process group the devnet created for it (its pid), else to the process alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
            return
    except OSError:
        pass
    try:
        os.kill(pid, sig)
    except OSError:
        pass


@dataclass
class DevnetState:
    dir: str
    lang: str = "tolk"
    chain_url: str = ""
    registry: str = ""                      # raw form 0:...
    ports: dict = field(default_factory=dict)
    parties: dict = field(default_factory=dict)   # label -> {"address", "mnemonic", "operator_key", ...}
    hashes: dict = field(default_factory=dict)    # worker/proxy images and the model: name -> hex
    model_name: str = "smollm2"
    base_url: str = ""                      # the gateway's OpenAI base URL
    procs: list[ProcRecord] = field(default_factory=list)
    started_at: float = 0.0

    @property
    def path(self) -> Path:
        return Path(self.dir) / "devnet.json"

    @classmethod
    def load(cls, directory: Path) -> Optional["DevnetState"]:
        p = Path(directory) / "devnet.json"
        try:
            doc = json.loads(p.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read the devnet state {p}: {e}") from None
        procs = [ProcRecord(**r) for r in doc.pop("procs", [])]
        doc.pop("format", None)
        return cls(**doc, procs=procs)

    def save(self) -> None:
        doc = {"format": FORMAT, **asdict(self)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        os.replace(tmp, self.path)

    def proc(self, name: str) -> Optional[ProcRecord]:
        return next((p for p in self.procs if p.name == name), None)

    def running(self) -> list[ProcRecord]:
        return [p for p in self.procs if p.alive()]

    def workers(self) -> list[ProcRecord]:
        return [p for p in self.procs if p.role == "worker"]
