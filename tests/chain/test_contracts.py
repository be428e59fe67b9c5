"""The contract objects of wrappers (Registry, Stake, Escrow, Reputation over a provider): one story,
the same outcome on the embedded chain and on the chain server; synchronous use on the embedded chain."""
from __future__ import annotations

import asyncio

import pytest

from node.chain import keys_from_seed, open_network
from wrappers import TON
from wrappers import escrow as E
from wrappers import keys as K
from wrappers import registry as R
from wrappers import reputation as P
from wrappers import stake as S
from wrappers.build import load_code
from wrappers.chain.contract import Instant, run
from wrappers.chain.emulated import EmbeddedChain
from wrappers.chain.provider import EmbeddedProvider


async def _story(name: str, state_file=None) -> dict:
    net = await open_network(name, state_file)
    try:
        owner = net.sender(await net.wallet(keys_from_seed(b"\x11" * 32)))
        payee = net.sender(await net.wallet(keys_from_seed(b"\x12" * 32)))
        pv = net.contract_provider
        params = R.NetworkParams(staking=R.Staking(treasury=owner.address), governance_delay=60)
        codes = R.ChildCodes(S.stake_code("tolk"), E.escrow_code("tolk"), load_code("reputation", "tolk"))
        reg = R.Registry.from_init(pv, owner.address, params, codes, lang="tolk", models={7: 1})
        before = await reg.get_status()
        deploy = await reg.send_deploy(owner)
        pid = (await reg.get_proposals())[1]
        await reg.send_propose(owner, R.action_add("worker_image", 5))

        stake = S.Stake.from_init(pv, reg.address, owner.address, S.ROLE_WORKER, code=codes.stake)
        assert stake.address == await reg.get_stake_address(owner.address, S.ROLE_WORKER)
        await stake.send_deposit(owner, 20 * TON + S.DEPOSIT_FEE)  # deploys it
        await stake.send_set_operator(owner, K.public_key_int(S.derive_operator_key("op")))

        payer_key = K.signing_key(b"\x13" * 32)
        esc = E.Escrow.from_init(pv, reg.address, owner.address, payee.address, K.public_key_int(payer_key),
                                 code=codes.escrow)
        await esc.send_open(owner, 2 * TON, K.public_key_int(S.derive_operator_key("payee")))
        await esc.send_request_withdraw(owner, TON)

        same = R.Registry(pv, reg.address)  # a deployed contract by its address alone
        rep = P.Reputation.from_init(pv, reg.address, owner.address, code=codes.reputation)
        return {"before": before, "after": await same.get_status(), "deployed": bool(deploy),
                "owner": (await same.get_owner())[0].to_str(), "params": await same.get_params(),
                "models": await same.is_allowed("model", 7), "proposal": (await same.get_proposal(pid)).action.hash,
                "stake": await stake.get_state(), "serves": await stake.serves_with(S.derive_operator_key("op").public_key()),
                "stake_params": await stake.get_params(), "channel": await esc.get_channel(),
                "payee_key_is": await esc.payee_key_is(S.derive_operator_key("payee").public_key()),
                "record_deployed": await rep.is_deployed(), "record_address": rep.address.to_str()}
    finally:
        await net.close(save=False)


def test_same_contract_story_on_the_embedded_chain_and_the_server(chain_server, tmp_path):
    embedded = asyncio.run(_story("embedded", tmp_path / "chain.json"))
    served = asyncio.run(_story(chain_server.url))
    assert embedded == served
    assert served["before"] == "nonexist" and served["after"] == "active" and served["deployed"]
    assert served["stake"].active == 20 * TON and served["stake"].is_active and served["serves"]
    assert served["channel"].state == E.State.OPEN and served["channel"].pending == TON and served["payee_key_is"]
    assert served["models"] and not served["record_deployed"]


def test_synchronous_use_on_the_embedded_chain(lang):
    c = EmbeddedChain()
    owner = c.treasury("owner")
    params = R.NetworkParams(staking=R.Staking(treasury=owner.address))
    reg = Instant(R.Registry.from_init(EmbeddedProvider(c), owner.address, params,
                                       R.ChildCodes(S.stake_code(lang)), lang=lang))
    assert not reg.deployed and reg.balance == 0 and reg.data_hash is None
    assert reg.send_deploy(owner)[-1].deploy and reg.deployed
    assert reg.read.params() == params == reg.get_params()
    # the synchronous readers are made from the same class and agree with it
    assert R.RegistryReader(c.get_method, reg.address).owner() == reg.read.owner()
    st = Instant(S.Stake.from_init(EmbeddedProvider(c), reg.address, owner.address, S.ROLE_PROXY, lang=lang))
    st.deposit(owner, 60 * TON + S.DEPOSIT_FEE)  # deposit(...) runs send_deposit; the first message deploys
    assert st.read.state().active == 60 * TON and st.address == reg.read.stake_address(owner.address, S.ROLE_PROXY)
    with pytest.raises(ValueError, match="no StateInit"):
        run(S.Stake(EmbeddedProvider(c), owner.address).send(owner, TON, None, deploy=True))


def test_run_refuses_a_call_that_waits():
    async def waits():
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="await it"):
        run(waits())
