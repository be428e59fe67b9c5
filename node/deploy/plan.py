"""What a deployment file asks for, and the messages that get a chain there.

* :func:`load_artifacts` reads the committed builds (``contracts/build/<name>.<language>.json``) of the
  registry and the configured child codes, and refuses an artifact whose code does not hash to the
  ``code_hash`` it states.
* :func:`expect` turns the file into the registry it describes: owner, parameters, child codes,
  initial trust lists, and so the state init and the address (a function of code and initial data).
* :func:`deploy_message` is the one message a fresh deployment needs: the state init, from the
  owner's wallet, non-bounceable, with the deploy value.
* :func:`fix_messages` turns differences found on a live registry into the governance proposals
  that remove them (a live registry is only ever changed through ``propose``).
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Optional

from pytoniq_core import Address, Cell
from pytoniq_core.tlb.account import StateInit

from node.chain import CocoonError
from wrappers import registry as R
from wrappers.build import BUILD, ROOT, Artifact, BuildError, load_artifact

from .config import CHILDREN, DeployConfig

PROPOSE_VALUE = 50_000_000  # 0.05 TON with each proposal; the registry returns what it does not use


@dataclass(frozen=True)
class Artifacts:
    registry: Artifact
    children: dict[str, Artifact]  # only the configured ones

    def path(self, name: str) -> str:
        a = self.registry if name == "registry" else self.children[name]
        return str((BUILD / f"{a.contract}.{a.language}.json").relative_to(ROOT))


def load_artifacts(language: str, children: tuple[str, ...]) -> Artifacts:
    arts = {}
    for name in ("registry",) + tuple(children):
        try:
            a = load_artifact(name, language)
        except BuildError as e:
            raise CocoonError(str(e)) from None
        if a.code.hash.hex() != a.code_hash:
            raise CocoonError(f"contracts/build/{name}.{language}.json: its code does not hash to its code_hash; "
                            "rebuild with `cocoon build` and check `cocoon build --check`")
        arts[name] = a
    return Artifacts(arts.pop("registry"), arts)


@dataclass(frozen=True)
class Expected:
    """The registry a deployment file describes."""
    owner: Address
    params: R.NetworkParams
    codes: R.ChildCodes
    trust: dict[str, tuple[int, ...]]
    state_init: StateInit
    artifacts: Artifacts

    @property
    def address(self) -> Address:
        return R.address_of(self.state_init)

    @property
    def code_hash(self) -> str:
        return self.artifacts.registry.code_hash

    def child_hash(self, name: str) -> Optional[str]:
        a = self.artifacts.children.get(name)
        return a.code_hash if a else None


def expect(cfg: DeployConfig, arts: Artifacts, owner: Address) -> Expected:
    params = cfg.params(owner)
    codes = R.ChildCodes(*[arts.children[n].code if n in arts.children else None for n in CHILDREN])
    data = R.initial_data(owner, params, codes, **cfg.trust_dicts())
    si = R.state_init(arts.registry.code, data)
    return Expected(owner, params, codes, dict(cfg.trust), si, arts)


@dataclass
class Message:
    """One message from the owner's wallet."""
    kind: str                           # "deploy" or "propose"
    title: str
    dest: Address
    value: int                          # nanoTON
    bounce: bool
    body: Optional[Cell] = None
    state_init: Optional[StateInit] = None
    action: Optional[Cell] = None       # the proposal's GovAction
    fixes: list[str] = field(default_factory=list)   # the checked fields it fixes

    def describe(self, network: str) -> list[str]:
        """Every part of the message, one line each, for the dry run and the log."""
        out = [f"to      {fmt_addr(self.dest, network)} ({'bounceable' if self.bounce else 'non-bounceable'})",
               f"value   {fmt_ton(self.value)} TON"]
        if self.state_init is not None:
            code, data = self.state_init.code, self.state_init.data
            out.append(f"init    code {code.hash.hex()} ({_cells(code)} cells), "
                       f"data {data.hash.hex()} ({_cells(data)} cells)")
        if self.action is not None:
            out.append(f"action  {R.describe_action(self.action)} (in a propose message)")
        if self.body is not None:
            out.append(f"body    {base64.b64encode(self.body.to_boc()).decode()} (BoC, base64)")
        else:
            out.append("body    (empty)")
        return out


def deploy_message(exp: Expected, value: int) -> Message:
    return Message("deploy", "deploy the registry", exp.address, value, bounce=False, state_init=exp.state_init,
                   fixes=["registry.status"])


def propose_message(registry: Address, action: Cell, title: str, fixes: list[str]) -> Message:
    return Message("propose", title, registry, PROPOSE_VALUE, bounce=True, body=R.propose(action), action=action,
                   fixes=fixes)


def fix_messages(exp: Expected, registry: Address, failed: list[str]) -> list[Message]:
    """The proposals that bring a live registry to the expectation, for the names of the failed
    checks (see :mod:`.verify`). The owner check has no proposal: ownership moves only by transfer."""
    out = []
    if "registry.code_hash" in failed:
        out.append(propose_message(registry, R.action_upgrade_code(exp.artifacts.registry.code),
                                   f"propose upgrading the registry code to {exp.code_hash[:16]}...",
                                   ["registry.code_hash"]))
    kids = [f for f in failed if f.startswith("children.")]
    if kids:
        out.append(propose_message(registry, R.action_set_child_codes(exp.codes), "propose the child codes", kids))
    ps = [f for f in failed if f.startswith("params.")]
    if ps:
        out.append(propose_message(registry, R.action_set_params(exp.params), "propose the parameters", ps))
    for f in failed:
        if f.startswith("trust."):
            _, kind, h = f.split(".")
            action = R.action_add(kind[:-1], int(h, 16))
            out.append(propose_message(registry, action, f"propose allowing {kind[:-1].replace('_', ' ')} {h}", [f]))
    return out


# ------------------------------------------------------------------------------------------ formatting
def fmt_ton(nano: int) -> str:
    from wrappers.chain.records import fmt_ton as f

    return f(nano)


def fmt_addr(a: Address, network: str) -> str:
    return a.to_str(is_bounceable=True, is_test_only=network == "testnet")


def _cells(c: Cell) -> int:
    seen, todo = set(), [c]
    while todo:
        x = todo.pop()
        if x.hash in seen:
            continue
        seen.add(x.hash)
        todo.extend(x.refs)
    return len(seen)
