"""``cocoon demo``: the network's contracts on a fresh embedded chain, narrated step by step.

Everything runs in the real TVM transaction emulator at mainnet prices; every number printed comes
from an executed transaction.
"""
from __future__ import annotations

import hashlib

import click
from pytoniq_core import Address

from wrappers import registry as R
from wrappers.chain.emulated import EmbeddedChain
from wrappers.chain.records import fee_table, fmt_ton, tx_tree

TON = 10**9


class Narrator:
    def __init__(self, chain: EmbeddedChain, names: dict[str, str]):
        self.chain, self.names, self.step = chain, names, 0
        self.txs: list = []

    def say(self, text: str) -> None:
        self.step += 1
        click.echo(click.style(f"\n[{self.step}] ", bold=True) + text)

    def result(self, txs, on: Address, expect_ok: bool = True) -> None:
        self.txs += txs
        mine = [t for t in txs if t.account.hash_part == on.hash_part and not t.bounced]
        t = mine[0]
        if t.success:
            click.echo(f"    ok   gas {t.gas_used}, fees {fmt_ton(t.total_fees)} TON")
        else:
            click.echo(f"    refused with error {R.describe_error(t.exit_code)}; the value bounced back")
        if t.success != expect_ok:
            raise click.ClickException(f"unexpected outcome: {t.describe()}")


def image_hash(label: str) -> int:
    return int.from_bytes(hashlib.sha256(label.encode()).digest(), "big")


def run_registry_demo(lang: str, show_tree: bool) -> None:
    chain = EmbeddedChain()
    owner, heir, stranger = chain.treasury("owner"), chain.treasury("heir"), chain.treasury("stranger")
    names = {f"0:{w.address.hash_part.hex()}": n for w, n in ((owner, "owner"), (heir, "heir"), (stranger, "stranger"))}
    n = Narrator(chain, names)
    params = R.NetworkParams(staking=R.Staking(treasury=owner.address), governance_delay=86400, is_test=True)

    n.say(f"The owner deploys the registry ({lang} build) with a one-day governance delay.")
    reg, txs = R.EmbeddedRegistry.deploy(chain, owner, lang, params)
    names[f"0:{reg.address.hash_part.hex()}"] = "registry"
    n.txs += txs
    click.echo(f"    registry at {reg.address.to_str()}, balance {fmt_ton(reg.balance)} TON")

    worker_img, proxy_img, model = image_hash("worker-image-v1"), image_hash("proxy-image-v1"), image_hash("tiny-llama@1")
    n.say("The owner proposes to allow a worker image, a proxy image and a model (loosening waits).")
    for kind, h in (("worker_image", worker_img), ("proxy_image", proxy_img), ("model", model)):
        n.result(reg.send(owner, R.propose(R.action_add(kind, h))), reg.address)
    props, _ = reg.read.proposals()
    for p in props:
        click.echo(f"    proposal #{p.id}: {R.describe_action(p.action)}")

    n.say("Someone tries to execute proposal #0 at once: too early.")
    n.result(reg.send(stranger, R.execute_proposal(0)), reg.address, expect_ok=False)

    n.say("A stranger tries to revoke nothing in particular as if they were the owner.")
    n.result(reg.send(stranger, R.revoke("model", model)), reg.address, expect_ok=False)

    n.say("One day later anyone executes the three proposals.")
    chain.advance(86400)
    for pid in (0, 1, 2):
        n.result(reg.send(stranger, R.execute_proposal(pid)), reg.address)
    click.echo(f"    worker image allowed: {reg.read.is_allowed('worker_image', worker_img)}, "
               f"model allowed: {reg.read.is_allowed('model', model)}, version {reg.read.version()}")

    n.say("A vulnerability is found in the proxy image: the owner revokes it, effective immediately.")
    n.result(reg.send(owner, R.revoke("proxy_image", proxy_img)), reg.address)
    click.echo(f"    proxy image allowed: {reg.read.is_allowed('proxy_image', proxy_img)}")

    n.say("The owner proposes higher prices, then thinks better of it and cancels.")
    new = R.NetworkParams(staking=params.staking, economics=R.Economics(price_per_token=40, worker_fee_per_token=30),
                          is_test=True, governance_delay=86400)
    n.result(reg.send(owner, R.propose(R.action_set_params(new))), reg.address)
    n.result(reg.send(owner, R.cancel_proposal(3)), reg.address)

    n.say("Ownership moves to a multisig-like heir in two steps: offer, then accept.")
    n.result(reg.send(owner, R.transfer_ownership(heir.address)), reg.address)
    n.result(reg.send(stranger, R.accept_ownership()), reg.address, expect_ok=False)
    n.result(reg.send(heir, R.accept_ownership()), reg.address)
    click.echo(f"    owner is now {reg.read.owner()[0].to_str()} (heir)")

    click.echo(click.style("\nTransactions and fees (mainnet prices):", bold=True))
    click.echo(fee_table(n.txs, names))
    total = sum(t.total_fees + t.fwd_fees for t in n.txs)
    click.echo(f"\n{len(n.txs)} transactions, {fmt_ton(total)} TON in fees; registry version {reg.read.version()}.")
    if show_tree:
        click.echo(click.style("\nTransaction tree:", bold=True))
        click.echo(tx_tree(n.txs, names))


@click.command()
@click.option("--lang", type=click.Choice(["func", "tolk"]), default="tolk", show_default=True,
              help="Which build of the contracts to run.")
@click.option("--tree", is_flag=True, help="Also print the transaction tree.")
def demo(lang: str, tree: bool) -> None:
    """Run the network's contracts on a fresh embedded chain and narrate what happens."""
    click.echo(click.style("Cocoon on TON: the registry's governance on an embedded chain", bold=True))
    click.echo("Every step is a real transaction in the TVM emulator at mainnet gas and forward prices.")
    run_registry_demo(lang, tree)
