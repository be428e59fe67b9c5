"""The gateway's small pieces: payment keys, the state store, and `cocoon client` input refused before
anything starts."""
from __future__ import annotations

import json

from click.testing import CliRunner

from node.chain import keys_from_seed
from node.cli import main
from node.client.chain import payment_key
from node.client.store import Store
from wrappers import keys as K


def test_payment_keys_are_derived_per_wallet_and_channel():
    a, b = keys_from_seed(b"\1" * 32), keys_from_seed(b"\2" * 32)
    pub = lambda k: K.public_key_int(k)
    assert pub(payment_key(a, 0)) == pub(payment_key(a, 0))          # nothing to keep but the counter
    keys = {pub(payment_key(a, i)) for i in range(50)} | {pub(payment_key(b, i)) for i in range(50)}
    assert len(keys) == 100
    assert pub(payment_key(a, 0)) != int.from_bytes(a.public, "big")  # never the wallet key itself


def test_store_books_survive_reopening(tmp_path):
    s = Store(tmp_path / "c.sqlite")
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 2   # FULL
    s.add_channel(0, "0:" + "a" * 64, "0:" + "b" * 64, "c" * 64, "https://p:1")
    s.authorize("r1", "0:" + "a" * 64, 0, 500, 500)
    s.finish_request("r1", "settling", 120, "0:" + "a" * 64, 120, 120,
                     receipt=dict(request_id="r1", channel="0:" + "a" * 64, proxy_owner="0:" + "b" * 64,
                                  endpoint="chat", model="m", job_id="f" * 64, ok=True, paid=120, prompt_tokens=3,
                                  completion_tokens=4, record={"x": 1}, verdict={"ok": True}))
    s.close()
    s = Store(tmp_path / "c.sqlite")
    ch = s.live_channel()
    assert (ch.settled, ch.signed_max) == (120, 500) and s.spent_total() == 120
    assert s.settling(ch.address) == [("r1", 120)]
    assert s.receipt("1").paid == 120 and s.receipt("r1").ok and s.receipt("ffffffff").job_id == "f" * 64
    assert s.receipt_stats()["completion_tokens"] == 4
    assert s.next_counter() == 1


def test_the_writer_commits_queued_writes_in_groups_and_keeps_them(tmp_path):
    """The running gateway's writes: lazy ones (a request's mark) and ones queued behind the caller (a
    voucher's row, an answer's receipt and total) share group commits, in order; an operation that fails changes nothing and the others
    stand; everything queued is on disk after close."""
    import asyncio

    from node.client import store as SQL

    a, b = "0:" + "a" * 64, "0:" + "b" * 64
    s = Store(tmp_path / "c.sqlite")
    s.add_channel(0, a, b, "c" * 64, "https://p:1")

    async def main():
        for i in range(50):
            s.submit(SQL.authorize_op(f"r{i}", a, 0, 100, 100 + i))
        s.submit(SQL.authorize_op("r0", a, 0, 100, 10**9))   # a duplicate id: refused, changes nothing
        done = [s.behind(SQL.finish_op(f"r{i}", "settling", 10, a, 10 * (i + 1), 10 * (i + 1))) for i in range(50)]
        await s.caught_up()
        assert all(f.done() for f in done)
        return s.channel(a), s.request_counts()

    ch, counts = asyncio.run(main())
    assert (ch.settled, ch.signed_max) == (500, 149) and counts == {"settling": 50}
    for i in range(50, 60):
        s.submit(SQL.mark_op(f"r{i - 50}", "settled"))
    s.close()
    s = Store(tmp_path / "c.sqlite")
    assert s.request_counts() == {"settling": 40, "settled": 10}
    s.close()


def test_an_older_store_gains_the_request_columns_and_lists_what_a_crash_cut_off(tmp_path):
    """A store written before requests kept their endpoint, model and request hash opens with those
    columns added and its rows intact; ``unfinished`` lists exactly the authorized requests that name
    a request hash (what a restart can ask the proxy about), oldest first."""
    import sqlite3

    from node.client import store as SQL

    a, b = "0:" + "a" * 64, "0:" + "b" * 64
    old = SQL.SCHEMA.replace(""",
    endpoint    TEXT,                         -- chat | completion   (these four: what a restart needs
    model       TEXT,                         --   to ask the proxy for the request's record)
    stream      INTEGER,
    request_hash TEXT                         -- SHA-256 of the body sent (hex)
""", "\n")
    assert old != SQL.SCHEMA
    db = sqlite3.connect(str(tmp_path / "c.sqlite"))
    db.executescript(old)
    db.execute("INSERT INTO requests(request_id, channel, settled_before, max_cost, state, created_at) "
               "VALUES('old', ?, 0, 100, 'authorized', 1)", (a,))
    db.commit()
    db.close()
    s = Store(tmp_path / "c.sqlite")
    try:
        s.add_channel(0, a, b, "c" * 64, "https://p:1")
        s.do(SQL.authorize_op("r1", a, 0, 100, 100, "chat", "m", False, bytes(32)))
        s.do(SQL.authorize_op("r2", a, 0, 100, 200, "completion", "m", True, b"\x01" * 32))
        s.do(SQL.finish_op("r1", "settling", 10, a, 10, 10))
        assert s.request("old")[4] == "authorized"
        assert s.unfinished(a) == [("r2", "completion", "m", 1, "01" * 32, 100)]
        assert s.unfinished(b) == []
    finally:
        s.close()
    s = Store(tmp_path / "c.sqlite")      # opening again adds nothing twice
    assert [r[0] for r in s.unfinished(a)] == ["r2"]
    s.close()


def test_run_refuses_bad_input_before_starting(tmp_path):
    r = CliRunner()
    base = ["client", "run", "--registry", "0:" + "1" * 64, "--state", str(tmp_path)]
    out = r.invoke(main, base + ["--proxy-endpoint", "127.0.0.1:1"])
    assert out.exit_code != 0 and "named --proxy" in out.output
    out = r.invoke(main, base + ["--proxy", "not-an-address"])
    assert out.exit_code != 0 and "--proxy must be auto" in out.output
    out = r.invoke(main, base + ["--budget", "-1"])
    assert out.exit_code != 0
    cfg = tmp_path / "c.toml"
    cfg.write_text('registry = "0:' + "1" * 64 + '"\nbudgte = "2"\n')
    out = r.invoke(main, ["client", "run", "--config", str(cfg)])
    assert out.exit_code != 0 and "unknown setting 'budgte'" in out.output


def test_status_and_receipts_need_a_state_folder(tmp_path):
    r = CliRunner()
    out = r.invoke(main, ["client", "status", "--state", str(tmp_path / "none")])
    assert out.exit_code == 1 and "no gateway state" in out.output
    out = r.invoke(main, ["receipt", "verify", "42", "--state", str(tmp_path / "none")])
    assert out.exit_code == 1
    f = tmp_path / "two.json"
    f.write_text(json.dumps([{}, {}]))
    out = r.invoke(main, ["receipt", "verify", str(f)])
    assert out.exit_code == 1 and "holds 2 receipts" in out.output
