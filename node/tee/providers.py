"""Quote providers: real TDX through Linux configfs-tsm, or the simulated TEE.

configfs-tsm (Documentation/ABI/testing/configfs-tsm) is the kernel's generic interface
for TEE reports: ``mkdir`` an entry under ``/sys/kernel/config/tsm/report``, write up to
64 bytes of report data to ``inblob``, read the quote from ``outblob``, then check that
``generation`` counts exactly our one write — otherwise another process wrote to the same
entry in between and the quote may be over *its* data. The entry is removed afterwards.
"""

from __future__ import annotations

import errno
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .simulated import SimulatedTdx

TSM_REPORT_ROOT = "/sys/kernel/config/tsm/report"


class QuoteProviderError(RuntimeError):
    """A quote could not be produced."""


class TsmUnavailableError(QuoteProviderError):
    """configfs-tsm is missing: no TDX guest, old kernel, or configfs not mounted."""


class TsmBusyError(QuoteProviderError):
    """The quote interface was busy or another writer raced us; retry later."""


class QuoteProvider(Protocol):
    simulated: bool

    def get_quote(self, report_data: bytes) -> bytes: ...


def _check_report_data(report_data: bytes) -> None:
    if len(report_data) != 64:
        raise ValueError("report data must be exactly 64 bytes")


@dataclass
class ConfigfsTsmProvider:
    """Real TDX quotes through configfs-tsm."""

    root: str | os.PathLike[str] = TSM_REPORT_ROOT
    expected_provider: str = "tdx_guest"
    simulated: bool = False

    # Filesystem hooks: the kernel's configfs is driven with plain file operations;
    # they are methods so that a test can stand in for the kernel on a temporary tree.
    def _mkdir(self, p: Path) -> None:
        os.mkdir(p)

    def _rmdir(self, p: Path) -> None:
        os.rmdir(p)

    def _read(self, p: Path) -> bytes:
        with open(p, "rb") as f:
            return f.read()

    def _write(self, p: Path, data: bytes) -> None:
        with open(p, "wb", buffering=0) as f:
            f.write(data)

    def available(self) -> bool:
        return Path(self.root).is_dir()

    def get_quote(self, report_data: bytes) -> bytes:
        _check_report_data(report_data)
        root = Path(self.root)
        if not root.is_dir():
            raise TsmUnavailableError(
                f"{root} does not exist: this is not a TDX guest with configfs-tsm "
                "(needs Linux >= 6.7 with CONFIG_TSM_REPORTS and configfs mounted)"
            )
        entry = root / f"cocoon-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            self._mkdir(entry)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM):
                raise QuoteProviderError(f"no permission to create {entry} (run as root)") from None
            raise QuoteProviderError(f"cannot create report entry {entry}: {e.strerror or e}") from None
        try:
            return self._quote_from(entry, report_data)
        finally:
            try:
                self._rmdir(entry)
            except OSError:
                pass

    def _quote_from(self, entry: Path, report_data: bytes) -> bytes:
        try:
            provider = self._read(entry / "provider").decode(errors="replace").strip()
        except FileNotFoundError:
            provider = ""
        if self.expected_provider and provider and provider != self.expected_provider:
            raise QuoteProviderError(f"configfs-tsm provider is {provider!r}, expected {self.expected_provider!r}")
        try:
            gen_before = int(self._read(entry / "generation").decode().strip() or 0)
            self._write(entry / "inblob", report_data)
            quote = self._read(entry / "outblob")
            gen_after = int(self._read(entry / "generation").decode().strip())
        except OSError as e:
            if e.errno in (errno.EBUSY, errno.EAGAIN, errno.EINTR):
                raise TsmBusyError(f"quote interface busy ({e.strerror}); retry") from None
            raise QuoteProviderError(f"configfs-tsm I/O failed at {e.filename}: {e.strerror or e}") from None
        except ValueError:
            raise QuoteProviderError("configfs-tsm generation counter is not a number") from None
        if gen_after != gen_before + 1:
            raise TsmBusyError(
                f"report entry changed underneath us (generation {gen_before} -> {gen_after}); retry"
            )
        if not quote:
            raise QuoteProviderError("configfs-tsm returned an empty quote")
        return quote


@dataclass
class SimulatedProvider:
    """Quotes from the simulated TEE (development only; see node.tee.simulated)."""

    tee: SimulatedTdx
    simulated: bool = True

    def get_quote(self, report_data: bytes) -> bytes:
        _check_report_data(report_data)
        return self.tee.quote(report_data)
