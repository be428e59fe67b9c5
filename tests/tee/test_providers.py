"""configfs-tsm against a temporary tree that behaves like the kernel's, and the simulated provider."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from node.tee.claims import Claims
from node.tee.providers import (
    ConfigfsTsmProvider,
    QuoteProviderError,
    TsmBusyError,
    TsmUnavailableError,
)
from node.tee.quote import parse_quote


class FakeKernelTsm(ConfigfsTsmProvider):
    """Stands in for the kernel: mkdir populates attributes, writing inblob makes a quote.

    Behaviour copied from Documentation/ABI/testing/configfs-tsm: every attribute write bumps
    ``generation``; ``outblob`` is the quote over the last ``inblob``; rmdir removes the entry.
    """

    def __init__(self, root: Path, tee, *, provider="tdx_guest", busy=False, racer=False):
        super().__init__(root=root)
        self.tee, self.provider_name, self.busy, self.racer = tee, provider, busy, racer
        self.entries_made: list[Path] = []

    def _mkdir(self, p: Path) -> None:
        super()._mkdir(p)
        self.entries_made.append(p)
        (p / "provider").write_text(self.provider_name + "\n")
        (p / "generation").write_text("0\n")
        (p / "outblob").write_bytes(b"")

    def _rmdir(self, p: Path) -> None:
        shutil.rmtree(p)

    def _write(self, p: Path, data: bytes) -> None:
        if self.busy:
            raise OSError(errno.EBUSY, "Device or resource busy", str(p))
        super()._write(p, data)
        gen = int((p.parent / "generation").read_text())
        (p.parent / "generation").write_text(f"{gen + 1}\n")
        if p.name == "inblob":
            if len(data) > 64:
                raise OSError(errno.EINVAL, "Invalid argument", str(p))
            (p.parent / "outblob").write_bytes(self.tee.quote(data.ljust(64, b"\0")))
            if self.racer:  # another process writes the same entry before we read
                gen = int((p.parent / "generation").read_text())
                (p.parent / "generation").write_text(f"{gen + 1}\n")


@pytest.fixture
def tsm_root(tmp_path):
    root = tmp_path / "sys/kernel/config/tsm/report"
    root.mkdir(parents=True)
    return root


def test_quote_over_our_report_data_and_entry_removed(tsm_root, worker_tee):
    p = FakeKernelTsm(tsm_root, worker_tee)
    rd = Claims(bytes(32)).report_data()
    q = p.get_quote(rd)
    assert parse_quote(q).report_data == rd
    assert len(p.entries_made) == 1 and p.entries_made[0].parent == tsm_root
    assert list(tsm_root.iterdir()) == []  # cleaned up


def test_missing_interface_is_explained(tmp_path):
    p = ConfigfsTsmProvider(root=tmp_path / "nope")
    assert not p.available()
    with pytest.raises(TsmUnavailableError, match="configfs-tsm"):
        p.get_quote(bytes(64))


def test_busy_interface_and_cleanup(tsm_root, worker_tee):
    p = FakeKernelTsm(tsm_root, worker_tee, busy=True)
    with pytest.raises(TsmBusyError, match="busy"):
        p.get_quote(bytes(64))
    assert list(tsm_root.iterdir()) == []


def test_generation_race_is_detected(tsm_root, worker_tee):
    p = FakeKernelTsm(tsm_root, worker_tee, racer=True)
    with pytest.raises(TsmBusyError, match="generation"):
        p.get_quote(bytes(64))
    assert list(tsm_root.iterdir()) == []


def test_wrong_provider_is_refused(tsm_root, worker_tee):
    p = FakeKernelTsm(tsm_root, worker_tee, provider="sev_guest")
    with pytest.raises(QuoteProviderError, match="sev_guest"):
        p.get_quote(bytes(64))


def test_empty_outblob_is_an_error(tsm_root, worker_tee):
    class Empty(FakeKernelTsm):
        def _read(self, p):
            return b"" if p.name == "outblob" else super()._read(p)

    with pytest.raises(QuoteProviderError, match="empty"):
        Empty(tsm_root, worker_tee).get_quote(bytes(64))


def test_permission_error_is_explained(tsm_root, worker_tee):
    class NoPerm(FakeKernelTsm):
        def _mkdir(self, p):
            raise PermissionError(errno.EACCES, "Permission denied", str(p))

    with pytest.raises(QuoteProviderError, match="permission"):
        NoPerm(tsm_root, worker_tee).get_quote(bytes(64))


def test_report_data_must_be_64_bytes(tsm_root, worker_tee, worker_provider):
    with pytest.raises(ValueError):
        FakeKernelTsm(tsm_root, worker_tee).get_quote(bytes(32))
    with pytest.raises(ValueError):
        worker_provider.get_quote(bytes(65))


def test_simulated_provider(worker_provider):
    rd = b"\x42" * 64
    assert worker_provider.simulated is True
    assert parse_quote(worker_provider.get_quote(rd)).report_data == rd
    assert ConfigfsTsmProvider().simulated is False
