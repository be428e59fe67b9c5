"""The whole network on one machine, as a user meets it: `cocoon devnet` processes over 127.0.0.1, the
`openai` SDK against the client gateway (streaming and not, a tool call), receipts checked with
`cocoon receipt verify`, a budget running out, a client's close answered in time by the proxy's claim
(time moved with the chain server), and at the end the money adding up on chain.

One devnet serves the module (started once, stopped by pid at the end, whatever happens)."""
from __future__ import annotations

import json

import openai
import pytest

from tests.devnet_kit import (TON, advance, ask, books, check_books, cli, cli_json, make_devnet, openai_client,
                                  time_limit, wait_for)
from node.devnet import money


@pytest.fixture(scope="module")
def devnet(tmp_path_factory):
    with time_limit(420):
        d = make_devnet(tmp_path_factory)
    try:
        yield d
    finally:
        d.down(quiet=True)
        assert not d.state.running()


def test_up_twice_starts_nothing_and_status_shows_the_money(devnet):
    with time_limit(120):
        before = [(p.name, p.pid) for p in devnet.state.procs]
        r = cli("devnet", "up", "--dir", str(devnet.dir))
        assert r.returncode == 0, r.stderr
        assert "already running" in r.stdout
        st = cli_json("devnet", "status", "--dir", str(devnet.dir))
        assert [(p["name"], p["pid"]) for p in st["processes"]] == before
        assert all(p["running"] for p in st["processes"])
        m = st["money"]
        assert m["adds_up"] and m["minted"] == m["balances"] + m["fees"]
        assert m["stakes"]["proxy"]["active"] == 60 * TON
        assert {w: m["stakes"][w]["active"] for w in ("worker-1", "worker-2")} == {"worker-1": 20 * TON,
                                                                               "worker-2": 20 * TON}


def test_chat_not_streaming_with_a_receipt_that_verifies(devnet):
    with time_limit(180):
        r = ask(devnet, "What is the capital of France? One word.", max_tokens=12)
        assert r.choices[0].message.content.strip()
        assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0
        coc = r.model_extra["cocoon"]
        assert coc["usage"]["completion_tokens"] == r.usage.completion_tokens and coc["cost"] > 0
        v = cli("receipt", "verify", coc["job_id"], "--state", str(devnet.dir / "client"), "--network",
                devnet.state.chain_url, "--allow-simulated", str(devnet.trust))
        assert v.returncode == 0, v.stdout + v.stderr
        assert "VERIFIED" in v.stdout


def test_chat_streaming_with_usage_and_receipt(devnet):
    with time_limit(180):
        c = openai_client(devnet)
        stream = c.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Count to five."}],
                                           max_tokens=24, temperature=0, stream=True,
                                           stream_options={"include_usage": True})
        text, usage, coc = [], None, None
        for chunk in stream:
            for ch in chunk.choices:
                text.append(ch.delta.content or "")
            if chunk.usage is not None:
                usage = chunk.usage
            coc = (chunk.model_extra or {}).get("cocoon") or coc
        assert "".join(text).strip()
        assert usage is not None and usage.completion_tokens > 0
        assert coc is not None and coc["usage"]["completion_tokens"] == usage.completion_tokens
        rec = [x for x in json.loads(cli("client", "receipts", "--json", "--state", str(devnet.dir / "client")).stdout)
               if x["job_id"] == coc["job_id"]]
        assert rec and rec[0]["verified"] and rec[0]["paid"] == coc["cost"]


def test_a_tool_call(devnet):
    with time_limit(180):
        tools = [{"type": "function", "function": {
            "name": "get_weather", "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
        r = ask(devnet, "What is the weather in Paris?", max_tokens=48, tools=tools,
                tool_choice={"type": "function", "function": {"name": "get_weather"}})
        calls = r.choices[0].message.tool_calls
        assert calls and calls[0].function.name == "get_weather"
        assert isinstance(json.loads(calls[0].function.arguments), dict)
        assert r.choices[0].finish_reason == "tool_calls"
        assert r.model_extra["cocoon"]["cost"] > 0


def test_budget_exhaustion_is_a_402_and_nothing_more_is_paid(devnet):
    with time_limit(240):
        devnet.start_gateway("client-small", budget="1", refresh=1.0)
        first = ask(devnet, "Say OK.", max_tokens=150, name="client-small")
        spent = first.model_extra["cocoon"]["cost"]
        assert 0 < spent < TON
        with pytest.raises(openai.APIStatusError) as e:  # settled + this request's maximum cost > 1 TON
            ask(devnet, "Say OK.", max_tokens=150, name="client-small")
        assert e.value.status_code == 402
        small = ask(devnet, "Say OK.", max_tokens=4, name="client-small")  # a cheaper one still fits
        spent += small.model_extra["cocoon"]["cost"]
        st = cli_json("client", "status", "--state", str(devnet.dir / "client-small"))
        assert st["spent"] == spent <= st["budget"] == TON


def test_close_is_answered_by_the_proxys_claim_in_time(devnet):
    with time_limit(240):
        if devnet.state.proc("client-small") is None:
            devnet.start_gateway("client-small", budget="1", refresh=1.0)
            ask(devnet, "Say OK.", max_tokens=4, name="client-small")
        devnet.state.proc("client-small").stop()
        st = cli_json("client", "status", "--state", str(devnet.dir / "client-small"))
        owed = st["spent"]
        assert owed > 0
        party = devnet.state.parties["client-small"]
        wallet_before = books(devnet).wallets.get("client-small")
        r = cli("client", "close", "--state", str(devnet.dir / "client-small"), "--mnemonic-file", party["mnemonic"],
                "--network", devnet.state.chain_url)
        assert r.returncode == 0, r.stderr
        ch = money.channel_of(books(devnet), "client-small → proxy")
        assert ch.state == "closing"
        advance(devnet, 3600 - 300)   # most of the notice passes; the proxy's claim must land before its end
        wait_for("the proxy's claim", lambda: money.channel_of(books(devnet), "client-small → proxy").claimed >= owed,
                 60)
        assert money.channel_of(books(devnet), "client-small → proxy").state == "closing"   # still in time
        advance(devnet, 301)
        r = cli("client", "close", "--finish", "--state", str(devnet.dir / "client-small"), "--mnemonic-file",
                party["mnemonic"], "--network", devnet.state.chain_url)
        assert r.returncode == 0, r.stderr
        b = books(devnet)
        ch = money.channel_of(b, "client-small → proxy")
        assert ch.state == "closed" and ch.claimed == owed and ch.held == 0
        if wallet_before is not None:
            assert b.wallets["client-small"] > wallet_before + ch.deposited - owed - TON // 10


def test_money_adds_up_on_chain(devnet):
    with time_limit(180):
        ask(devnet, "Say hi.", max_tokens=8)
        check_books(devnet)
