"""The devnet's process records: a process is identified by pid and start time, so `down` never stops a
process that later took the same pid; stop is SIGTERM to the process group, then SIGKILL."""
from __future__ import annotations

import dataclasses
import sys

from node.devnet.procs import spawn
from node.devnet.state import DevnetState, start_ticks


def test_a_record_stops_exactly_its_process(tmp_path):
    rec = spawn("sleeper", "chain", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "s.log", tmp_path)
    try:
        assert rec.alive() and rec.ticks == start_ticks(rec.pid)
        other = dataclasses.replace(rec, ticks=rec.ticks + 1)   # the same pid, another start: not ours
        assert not other.alive() and other.stop() == "not running" and rec.alive()
        st = DevnetState(dir=str(tmp_path), procs=[rec])
        st.save()
        again = DevnetState.load(tmp_path)
        assert again.procs[0].pid == rec.pid and again.procs[0].alive()
        assert again.procs[0].stop(grace=5) == "stopped"
        assert not rec.alive()
    finally:
        rec.kill9()


def test_a_process_that_ignores_sigterm_is_killed(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    rec = spawn("stubborn", "chain", [sys.executable, "-c", code], tmp_path / "s.log", tmp_path)
    try:
        import time

        deadline = time.monotonic() + 10
        while "up" not in (tmp_path / "s.log").read_text().splitlines() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rec.stop(grace=0.5) == "killed" and not rec.alive()
    finally:
        rec.kill9()
