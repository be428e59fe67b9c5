"""The worker's start-up checks, registry revocation, crash safety of receipts, pay and claims,
each against a real worker process."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import urllib.request

import pytest
from pytoniq_core import Address

from node.link import frames as F
from tests.procs import COCOON, ProcessFailed
from wrappers import TON
from node.payments.vouchers import Voucher
from wrappers.stake import derive_operator_key

from .conftest import Served
from .test_worker_jobs import chat_body, check_receipt


def status(served) -> dict:
    st = subprocess.run([COCOON, "worker", "status", "--state-dir", str(served.state_dir), "--json"],
                        capture_output=True, text=True, timeout=60)
    assert st.returncode == 0, st.stderr
    return json.loads(st.stdout)


def health(served) -> dict:
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{served.metrics_port}/health", timeout=10).read())


def _mk(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("world_kw,why", [
    (dict(allow_model=False), "is not allowed in the registry"),
    (dict(allow_image=False), "is not an allowed worker image"),
    (dict(worker_stake=5 * TON), "below the minimum of 10 TON"),
], ids=["model", "image", "stake"])
def test_refused_at_start_with_one_line(tmp_path, model_path, world_kw, why):
    s = Served(_mk(tmp_path / "w"), model_path, **world_kw)
    try:
        with pytest.raises(ProcessFailed) as e:
            s.start_worker()
        assert why in str(e.value)
        if "allow_model" in world_kw:
            assert s.world.model_hash.hex() in str(e.value)
        worker = s.procs.started[-1]
        assert worker.popen.returncode == 1 and "Traceback" not in worker.output()
    finally:
        s.close()


def test_unbound_operator_key_is_refused_at_start(tmp_path, model_path):
    s = Served(_mk(tmp_path / "w"), model_path)
    try:
        s.world.worker_key_file.write_text(derive_operator_key("someone else").private_bytes_raw().hex())
        with pytest.raises(ProcessFailed) as e:
            s.start_worker()
        assert "bound to another operator key" in str(e.value)
    finally:
        s.close()


@pytest.mark.parametrize("kind", ["worker_image", "model"])
def test_revoked_image_or_model_is_dropped_at_the_next_refresh(tmp_path, model_path, kind):
    s = Served(_mk(tmp_path / "w"), model_path)
    try:
        s.start_worker()
        s.peer.wait_connected(60)
        s.world.revoke(kind, s.world.worker_image if kind == "worker_image" else s.world.model_hash)
        code = s.peer.closes.get(timeout=30)
        assert code == F.CLOSE_REVOKED
        time.sleep(3)
        assert not s.peer.connected() and s.peer.hellos.empty(), "a revoked worker does not dial again"
        h = health(s)
        assert h["state"].startswith("revoked") and ("image" if kind == "worker_image" else "model") in h["state"]
    finally:
        s.close()


def test_kill9_between_signing_and_sending_never_gives_a_second_receipt(tmp_path, model_path):
    """A job id's start is durable before its receipt leaves. A failpoint kills the worker (SIGKILL)
    after it signed a job's receipt and before it sent it: after a restart that job id is never served
    again (409 `duplicate_job`, no receipt), so the receipt signed has no twin."""
    s = Served(_mk(tmp_path / "w"), model_path, env={"COCOON_WORKER_FAILPOINT": "receipt-signed"})
    try:
        s.start_worker()
        s.peer.wait_connected(60)
        body = chat_body(temperature=1.0, max_tokens=8)
        jid = s.peer.submit("chat", body)
        s.proc.popen.wait(timeout=120)           # the failpoint kills the worker with SIGKILL
        assert s.proc.popen.returncode == -9
        db = sqlite3.connect(str(s.state_dir / "worker.sqlite"))
        started = db.execute("SELECT COUNT(*) FROM jobs WHERE job_id=?", (jid,)).fetchone()[0]
        kept = db.execute("SELECT COUNT(*) FROM receipts").fetchone()[0]
        db.close()
        assert started == 1 and kept == 0
        before = s.peer.next_frame(jid, timeout=10)  # the answer went out before the crash
        assert isinstance(before, F.Result) and before.status == 200
        s.env = None
        s.start_worker()                          # restart without the failpoint
        s.peer.wait_connected(60)
        s.peer.submit("chat", body, job_id=jid)   # the same job again: refused, and no receipt
        out = s.peer.collect(jid, timeout=60)
        assert out.result.status == 409 and out.result.body["error"]["code"] == "duplicate_job"
        assert out.receipt is None
        assert status(s)["jobs"] == 0
        again = s.peer.collect(s.peer.submit("chat", body))   # other jobs are served as ever
        assert again.result.status == 200 and again.receipt is not None
        jid2 = again.receipt.job_id                # served again: 409 and the very receipt it sent
        s.peer.submit("chat", body, job_id=jid2)
        twice = s.peer.collect(jid2, timeout=60)
        assert twice.result.status == 409 and twice.receipt.receipt == again.receipt.receipt
    finally:
        s.close()


def test_vouchers_backwards_or_by_another_key_are_refused_and_the_credit_is_enforced(tmp_path, model_path):
    s = Served(_mk(tmp_path / "w"), model_path, "--credit", "1000")
    try:
        s.start_worker()
        s.peer.wait_connected(60)
        w = s.world
        ch = w.channel.escrow.address
        body = chat_body(max_tokens=4)
        first = s.peer.collect(s.peer.submit("chat", body))
        assert first.result.status == 200
        earned = status(s)["earned"]
        assert earned > 1000
        refused = s.peer.collect(s.peer.submit("chat", body))
        assert refused.result.status == 402 and refused.result.body["error"]["code"] == "proxy_behind"
        assert refused.receipt is None
        s.peer.send(F.Pay(Voucher.sign(w.proxy.key, ch, earned + 10)))
        time.sleep(1)
        assert status(s)["paid"] == earned + 10
        s.peer.send(F.Pay(Voucher.sign(w.proxy.key, ch, earned + 5)))               # backwards
        s.peer.send(F.Pay(Voucher.sign(derive_operator_key("mallory"), ch, 10 * TON)))  # another key
        other = Address("0:" + "ab" * 32)
        s.peer.send(F.Pay(Voucher.sign(w.proxy.key, other, 10 * TON)))             # another channel
        time.sleep(1)
        st = status(s)
        assert st["paid"] == earned + 10 and st["debt"] == 0
        again = s.peer.collect(s.peer.submit("chat", body))
        assert again.result.status == 200
        check_receipt(s, again.receipt.job_id, body, again.receipt, again.result.body["choices"][0]["message"]["content"])
    finally:
        s.close()


def test_no_claim_while_the_fee_is_too_large_a_share_but_one_before_a_close_ends(tmp_path, model_path):
    from node.chain import new_mnemonic, write_mnemonic

    hot = tmp_path / "hot.words"
    write_mnemonic(hot, new_mnemonic())
    s = Served(_mk(tmp_path / "w"), model_path, "--hot-mnemonic-file", str(hot), "--claim-interval", "1")
    try:
        s.start_worker()
        s.peer.wait_connected(60)
        w = s.world
        ch = w.channel.escrow.address
        half = TON // 2        # the claim fee (0.02 TON) is 4 % of it: above the 1 % share, so no claim yet
        s.peer.send(F.Pay(Voucher.sign(w.proxy.key, ch, half)))
        time.sleep(4)
        assert status(s)["claimed"] == 0 and status(s)["paid"] == half
        w.reload()
        w.channel.escrow.request_close(w.proxy.wallet)                   # the proxy gives notice
        w.chain.advance(w.net.params.economics.close_delay - 300)        # the notice ends in 5 minutes
        w.save()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and status(s)["claimed"] == 0:
            time.sleep(1)
        assert status(s)["claimed"] == half, "the worker claims before the close notice ends"
        w.reload()
        assert w.channel.escrow.read.channel().claimed == half
    finally:
        s.close()


def test_reconnects_after_a_drop_and_sends_the_receipt_of_the_job_it_cut(tmp_path, model_path):
    from .peer import Peer

    s = Served(_mk(tmp_path / "w"), model_path)
    try:
        s.start_worker()
        s.peer.wait_connected(60)
        body = chat_body(content="Write a long story about the sea.", max_tokens=300, stream=True, temperature=0.7)
        jid = s.peer.submit("chat", body, stream=True)
        while True:
            f = s.peer.next_frame(jid, timeout=60)
            if isinstance(f, F.Chunk) and f.data["choices"][0]["delta"].get("content"):
                break
        s.peer.stop()                                 # the proxy goes away mid-job
        s.peer = Peer(s.world, s.proxy_port).start()  # and comes back on the same endpoint
        hello = s.peer.wait_connected(60)
        assert hello.model == "SmolLM2-135M-Instruct"
        rf = s.peer.unmatched.get(timeout=60)         # the cut job's receipt, stored and re-sent
        assert isinstance(rf, F.ReceiptFrame) and rf.job_id == jid
        assert 1 <= rf.usage.completion_tokens < 300
        again = s.peer.collect(s.peer.submit("chat", chat_body(max_tokens=4)))
        assert again.result.status == 200
    finally:
        s.close()
