"""Real processes for service tests: free ports, start with a log file, wait until ready, stop by pid.

Every service test runs the services as separate processes over 127.0.0.1, exactly as users run
them. :class:`Procs` starts each one in its own process group with its output in a log file, waits
for it to answer, and stops everything it started, by pid, when the test ends (SIGTERM, then
SIGKILL after a grace period), so no test leaves a process behind. :meth:`Procs.kill9` is the
crash a test simulates: SIGKILL, no chance to clean up.

    def test_x(procs):                       # the fixture in tests/conftest.py
        port = free_port()
        p = procs.start("chain", [COCOON, "chain", "serve", "--port", str(port)],
                        ready=http_ready(f"http://127.0.0.1:{port}/api/v2/getMasterchainInfo"))
        ...
        procs.kill9(p)
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

COCOON = str(Path(sys.executable).with_name("cocoon"))
PYTHON = sys.executable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ready(url: str) -> Callable[[], bool]:
    """A readiness probe: the URL answers with any HTTP status."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    return probe


def port_ready(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    """A readiness probe: something accepts TCP connections on the port (TLS listeners)."""

    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False

    return probe


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


class ProcessFailed(AssertionError):
    pass


class Procs:
    """Processes started by one test; :meth:`stop_all` ends every one of them."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.started: list[Proc] = []

    def start(self, name: str, argv: Sequence[str], *, ready: Optional[Callable[[], bool]] = None,
              timeout: float = 60.0, env: Optional[dict] = None, cwd: Optional[Path] = None) -> Proc:
        """Start ``argv`` with its output in ``<workdir>/<name>.log``; wait until ``ready()`` is true.
        Raises :class:`ProcessFailed` (with the log's tail) if it exits or is not ready in time."""
        log = self.workdir / f"{name}.log"
        full_env = dict(os.environ)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if env:
            full_env.update(env)
        fh = open(log, "ab")
        popen = subprocess.Popen(list(argv), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=full_env, cwd=str(cwd or self.workdir), start_new_session=True)
        fh.close()
        p = Proc(name, popen, log, list(argv))
        self.started.append(p)
        if ready is not None:
            self.wait(p, ready, timeout)
        return p

    def wait(self, p: Proc, ready: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not p.alive():
                raise ProcessFailed(f"{p.name} exited with {p.popen.returncode}:\n{p.output()[-4000:]}")
            if ready():
                return
            time.sleep(0.1)
        raise ProcessFailed(f"{p.name} was not ready within {timeout:.0f} s:\n{p.output()[-4000:]}")

    def kill9(self, p: Proc) -> None:
        """The crash: SIGKILL to the process group, no clean-up of any kind."""
        _signal_group(p, signal.SIGKILL)
        p.popen.wait(timeout=10)

    def stop(self, p: Proc, grace: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        if p.alive():
            _signal_group(p, signal.SIGTERM)
            try:
                p.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.popen.wait(timeout=10)
        return p.popen.returncode

    def stop_all(self) -> None:
        for p in reversed(self.started):
            try:
                self.stop(p, grace=5.0)
            except Exception:
                pass


def _signal_group(p: Proc, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        p.popen.send_signal(sig)
