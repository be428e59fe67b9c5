"""Starting the devnet's processes and waiting for them, with progress on every wait."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Sequence

from .state import ProcRecord, start_ticks


class DevnetError(Exception):
    """A one-line reason the devnet could not do what was asked."""


def cocoon_argv() -> list[str]:
    """The ``cocoon`` command of this installation (beside the running Python)."""
    exe = Path(sys.executable).with_name("cocoon")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "node.cli"]


def free_port(preferred: Optional[int] = None) -> int:
    """``preferred`` if nothing listens there, else any free port on 127.0.0.1."""
    import socket

    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise DevnetError("no free TCP port on 127.0.0.1")


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """The URL answers with any HTTP status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class Reporter:
    """Prints steps, and progress while waiting: a line rewritten in place on a terminal, a line every
    few seconds elsewhere."""

    def __init__(self, echo: Callable[[str], None] = print, tty: Optional[bool] = None):
        self.echo = echo
        self.tty = sys.stderr.isatty() if tty is None else tty

    def step(self, text: str) -> None:
        self.echo(text)

    def wait(self, what: str, probe: Callable[[], bool], timeout: float, *,
             alive: Optional[Callable[[], Optional[str]]] = None, every: float = 0.1) -> float:
        """Poll ``probe`` until it holds; ``alive()`` returns a reason to give up (a process died)."""
        start = time.monotonic()
        shown = 0.0
        while True:
            waited = time.monotonic() - start
            if probe():
                if self.tty and waited >= 1:
                    sys.stderr.write("\r\033[K")
                    sys.stderr.flush()
                return waited
            if alive is not None:
                why = alive()
                if why:
                    if self.tty:
                        sys.stderr.write("\r\033[K")
                    raise DevnetError(f"{what}: {why}")
            if waited > timeout:
                if self.tty:
                    sys.stderr.write("\r\033[K")
                raise DevnetError(f"{what}: not done after {timeout:.0f} s")
            if self.tty and waited >= 1:
                sys.stderr.write(f"\r  waiting for {what}... {waited:4.0f} s (at most {timeout:.0f} s)")
                sys.stderr.flush()
            elif not self.tty and waited - shown >= 5:
                shown = waited
                self.echo(f"  still waiting for {what}: {waited:.0f} s (at most {timeout:.0f} s)")
            time.sleep(every)


def spawn(name: str, role: str, argv: Sequence[str], log: Path, cwd: Path, env: Optional[dict] = None,
          **record) -> ProcRecord:
    """Start ``argv`` in its own session (so it and its children stop together), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    full_env.pop("COCOON_MNEMONIC", None)  # each process gets its own key file, never the caller's
    if env:
        full_env.update(env)
    with open(log, "ab") as fh:
        fh.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        fh.flush()
        p = subprocess.Popen(list(argv), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=full_env, cwd=str(cwd), start_new_session=True)
    return ProcRecord(name=name, role=role, pid=p.pid, ticks=start_ticks(p.pid), argv=list(argv), log=str(log),
                      **record)


def exited(rec: ProcRecord) -> Callable[[], Optional[str]]:
    """For :meth:`Reporter.wait`: a reason when the process is gone, with its log's last lines."""

    def check() -> Optional[str]:
        try:
            os.waitpid(rec.pid, os.WNOHANG)  # reap it if it is our child
        except ChildProcessError:
            pass
        if rec.alive():
            return None
        return f"{rec.name} exited; the end of {rec.log}:\n" + tail(Path(rec.log), 15)

    return check


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    " + ln for ln in text.rstrip().splitlines()[-lines:])
