"""Differential tests: the FunC and the Tolk builds fed the same random operations must agree.

A hypothesis state machine drives two embedded chains, one per build, with identical messages from
identical wallets, and after every step compares what the contracts did (success, explicit exit
code, the ops they sent back) and what they hold (every getter). Balances cannot be equal to the
nanoTON, because the two builds burn different amounts of gas; they must agree up to the fees of
the step, which catches any difference in what a contract pays out. On each chain the global money
invariant holds after every step: minted = balances + fees collected.

The number of steps is COCOON_DIFF_STEPS (default 10,000: examples x steps per example).
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from pytoniq_core import Address, begin_cell

from wrappers import registry as R
from wrappers.chain.emulated import EmbeddedChain

TOTAL_STEPS = int(os.environ.get("COCOON_DIFF_STEPS", "10000"))
STEPS_PER_EXAMPLE = 50
TON = 10**9
STAKE_CODE = begin_cell().store_uint(0x5741CE, 24).end_cell()
HASHES = [(i + 1) << 240 for i in range(6)]
ACTORS = ("owner", "heir", "stranger")


class World:
    """One chain with one registry build and the same cast of wallets."""

    def __init__(self, lang: str):
        self.chain = c = EmbeddedChain()
        self.w = {n: c.treasury(n) for n in ACTORS}
        params = R.NetworkParams(staking=R.Staking(treasury=self.w["owner"].address), governance_delay=100,
                                 max_proxies=3)
        self.reg, _ = R.EmbeddedRegistry.deploy(c, self.w["owner"], lang, params, R.ChildCodes(STAKE_CODE),
                                                worker_images={HASHES[0]: 1})
        # the two builds have different code, hence different registry and child addresses: compare
        # destinations by role, not by address
        self.names = {w.address.to_str(): n for n, w in self.w.items()}
        self.names[self.reg.address.to_str()] = "registry"
        for n, w in self.w.items():
            for role in (R.ROLE_WORKER, R.ROLE_PROXY):
                a = R.child_address(STAKE_CODE, self.reg.address, R.stake_identity(w.address, role))
                self.names[a.to_str()] = f"stake:{n}:{role}"

    def send(self, actor: str, body, value: int):
        start = len(self.chain.transactions)
        if actor.startswith("stake:"):  # a message from the stake contract of (owner, proxy role)
            owner = self.w[actor.split(":")[1]].address
            src = R.child_address(STAKE_CODE, self.reg.address, R.stake_identity(owner, R.ROLE_PROXY))
            self.chain.forge(src, self.reg.address, value, body)
        else:
            self.w[actor].send(self.reg.address, value, body)
        return self.chain.transactions[start:]

    def outcome(self, txs) -> tuple:
        mine = [t for t in txs if t.account == self.reg.address and not t.bounced]
        t = mine[0]
        sent = sorted((m_op(c), self.names.get(c.info.dest.to_str(), "?") if c.info.dest else "") for c in t.out_msgs)
        return t.success, t.exit_code if not t.success else 0, tuple(sent)

    def state(self) -> tuple:
        r = self.reg.read
        props, next_id = r.proposals()
        return (r.owner(), r.version(), r.params(), r.trust(), r.child_codes().stake.hash if r.child_codes().stake else None,
                [(p.owner_hash, p.operator_key, p.stake, p.active, p.endpoint) for p in r.proxies()],
                [(p.id, p.execute_after, p.action.hash) for p in props], next_id)

    def balances(self) -> dict:
        out = {n: w.balance for n, w in self.w.items()}
        out["registry"] = self.reg.balance
        return out

    def fees(self, txs) -> int:
        return sum(t.total_fees + t.in_fwd_fee for t in txs)


def m_op(msg) -> int | None:
    s = msg.body.begin_parse()
    return s.preload_uint(32) if s.remaining_bits >= 32 else None


actor = st.sampled_from(ACTORS)
hash_ = st.sampled_from(HASHES)
kind = st.sampled_from(["worker_image", "proxy_image", "model"])
value = st.sampled_from([R.MIN_OP_VALUE - 1, 50_000_000, R.SLASH_EXEC_VALUE + 10_000_000, TON])


class RegistryDifferential(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        self.worlds = [World("func"), World("tolk")]
        self.steps = 0

    def both(self, actor_name: str, body, value: int):
        before = [w.balances() for w in self.worlds]
        results = [w.send(actor_name, body, value) for w in self.worlds]
        outs = [w.outcome(txs) for w, txs in zip(self.worlds, results)]
        assert outs[0] == outs[1], f"builds disagree: func {outs[0]} vs tolk {outs[1]}"
        fees = sum(w.fees(txs) for w, txs in zip(self.worlds, results))
        after = [w.balances() for w in self.worlds]
        for name in after[0]:
            d_func = after[0][name] - before[0][name]
            d_tolk = after[1][name] - before[1][name]
            assert abs(d_func - d_tolk) <= fees, f"{name}: balance change {d_func} (func) vs {d_tolk} (tolk)"
        self.steps += 1

    @rule(a=actor, k=kind, h=hash_, v=value)
    def revoke(self, a, k, h, v):
        self.both(a, R.revoke(k, h), v)

    @rule(a=actor, k=kind, h=hash_, v=value)
    def propose_add(self, a, k, h, v):
        self.both(a, R.propose(R.action_add(k, h)), v)

    @rule(a=actor, delay=st.integers(0, 200), bps=st.sampled_from([0, 5000, 10_001]))
    def propose_params(self, a, delay, bps):
        p = R.NetworkParams(staking=R.Staking(treasury=self.worlds[0].w["owner"].address, slash_bps=bps),
                            governance_delay=delay, max_proxies=3)
        self.both(a, R.propose(R.action_set_params(p)), 50_000_000)

    @rule(a=actor, victim=actor, amount=st.integers(0, 5 * TON))
    def propose_slash(self, a, victim, amount):
        self.both(a, R.propose(R.action_slash_stake(self.worlds[0].w[victim].address, 2, amount, 1)), 50_000_000)

    @rule(a=actor, pid=st.integers(0, 6), v=value)
    def execute(self, a, pid, v):
        self.both(a, R.execute_proposal(pid), v)

    @rule(a=actor, pid=st.integers(0, 6))
    def cancel(self, a, pid):
        self.both(a, R.cancel_proposal(pid), 50_000_000)

    @rule(seconds=st.sampled_from([1, 50, 100, 1000]))
    def wait(self, seconds):
        for w in self.worlds:
            w.chain.advance(seconds)

    @rule(a=actor, to=st.sampled_from(ACTORS + ("none",)))
    def transfer(self, a, to):
        target = None if to == "none" else self.worlds[0].w[to].address
        self.both(a, R.transfer_ownership(target), 50_000_000)

    @rule(a=actor)
    def accept(self, a):
        self.both(a, R.accept_ownership(), 50_000_000)

    @rule(owner=actor, stake=st.sampled_from([0, 49 * TON, 50 * TON, 80 * TON]), active=st.booleans(),
          key=st.integers(0, 3))
    def register(self, owner, stake, active, key):
        body = R.register_proxy(self.worlds[0].w[owner].address, key, stake, active, f"p{key}:1")
        self.both(f"stake:{owner}", body, 50_000_000)

    @rule(owner=actor, stake=st.sampled_from([0, 49 * TON, 80 * TON]), active=st.booleans())
    def status(self, owner, stake, active):
        body = R.stake_status(self.worlds[0].w[owner].address, R.ROLE_PROXY, active, 1, stake)
        self.both(f"stake:{owner}", body, 50_000_000)

    @rule(a=actor)
    def unregister(self, a):
        self.both(a, R.unregister_proxy(), 50_000_000)

    @rule(a=actor)
    def query(self, a):
        self.both(a, R.query_params(), 50_000_000)

    @invariant()
    def same_state_and_no_leak(self):
        if not hasattr(self, "worlds"):
            return
        s0, s1 = (w.state() for w in self.worlds)
        assert s0 == s1, "getters disagree between the builds"
        for w in self.worlds:
            assert w.chain.money_leak() == 0


RegistryDifferential.TestCase.settings = settings(
    max_examples=max(1, TOTAL_STEPS // STEPS_PER_EXAMPLE), stateful_step_count=STEPS_PER_EXAMPLE,
    deadline=None, suppress_health_check=list(HealthCheck))
test_registry_builds_agree = RegistryDifferential.TestCase
