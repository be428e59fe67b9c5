"""The worker behind a real proxy (`cocoon devnet`: chain server, proxy, worker and gateway processes):
a client that goes away mid-stream makes the proxy cancel the job, the worker stops generating at once
and bills only the tokens it delivered."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.devnet_kit import cli_json, make_devnet, openai_client, time_limit


@pytest.fixture(scope="module")
def devnet(tmp_path_factory):
    with time_limit(420):
        d = make_devnet(tmp_path_factory, workers=1)
    try:
        yield d
    finally:
        d.down(quiet=True)


def test_a_client_going_away_cancels_the_job_and_only_delivered_tokens_are_billed(devnet):
    with time_limit(240):
        w = devnet.state.workers()[0]
        before = cli_json("worker", "status", "--state-dir", w.state_dir)
        c = openai_client(devnet)
        stream = c.chat.completions.create(model=devnet.state.model_name, max_tokens=400, temperature=0.7,
                                           messages=[{"role": "user", "content": "Write a long story about a ship."}],
                                           stream=True)
        got = 0
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got += 1
                if got == 5:
                    break
        stream.close()                           # the client goes away
        t0 = time.monotonic()
        db = Path(w.state_dir) / "worker.sqlite"
        row = None
        while time.monotonic() - t0 < 30:
            con = sqlite3.connect(str(db))
            row = con.execute("SELECT completion_tokens, cancelled FROM receipts ORDER BY created DESC LIMIT 1"
                              ).fetchone()
            con.close()
            if row and row[1]:
                break
            time.sleep(0.2)
        assert row is not None and row[1] == 1, "the proxy's cancel reached the worker"
        assert time.monotonic() - t0 < 15, "generation stopped at once"
        assert got <= row[0] < 400                # billed: what it delivered, not the 400 asked for
        after = cli_json("worker", "status", "--state-dir", w.state_dir)
        assert after["cancelled"] == before["cancelled"] + 1
