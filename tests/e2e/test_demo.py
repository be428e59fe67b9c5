"""`cocoon demo` as a newcomer runs it (a real process): a real answer streamed, its receipt verified,
claims, a reputation report, money that adds up; every process it started is gone when it ends."""
from __future__ import annotations

import os
import re
import signal
import subprocess

from tests.procs import COCOON


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_demo_tells_the_whole_story_and_stops_everything(tmp_path):
    d = tmp_path / "demo"
    p = subprocess.Popen([COCOON, "demo", "--dir", str(d)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         cwd=tmp_path, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=420)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 0, out[-4000:]
    for step in ("1. The network comes up", "2. Attestation", "3. A question", "4. The receipt", "5. Vouchers",
                 "6. Claims", "7. Reputation", "8. The money"):
        assert step in out, step
    answer = re.search(r"SmolLM2: (.*)", out).group(1)
    assert len(answer.split()) >= 3                                   # a real answer, streamed
    assert "`cocoon attest verify` PASSED" in out and "FAILED" not in out
    assert "VERIFIED" in out                                          # the receipt, checked
    assert re.search(r"worker-\d claimed [\d.]+ TON", out) and "the proxy saw the close notice and claimed" in out
    assert re.search(r"worker-\d: [1-9]\d* report\(s\) on chain", out)
    assert "by the faucet: they add up" in out
    pids = [int(x) for x in re.findall(r"\(pid (\d+)", out)]
    assert len(pids) >= 5                                             # chain, proxy, two workers, gateway
    assert not [pid for pid in pids if _alive(pid)]
