"""How a deployment run tells the operator what happens, without knowing how it is shown.

The library calls a :class:`Report`; the default prints plain lines (stdout, notes on stderr) and
draws no progress. ``cocoon deploy`` (:mod:`node.cli.deploy`) passes one that echoes through click
and draws progress bars.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

Progress = Callable[[float, float], None]  # (seconds waited, timeout)


class Report:
    def echo(self, text: str) -> None:
        """One line of the run's account (stdout)."""
        print(text)

    def note(self, text: str) -> None:
        """A side remark (connecting, faucet top-ups): stderr."""
        print(text, file=sys.stderr)

    def line(self, label: str, text: str) -> None:
        self.echo(f"{label:<12}{text}")

    @contextmanager
    def waiting(self, label: str) -> Iterator[Optional[Progress]]:
        """A progress callback ``(waited, timeout)`` for one wait, or None; closed when the wait ends."""
        yield None
