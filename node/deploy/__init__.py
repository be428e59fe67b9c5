"""Deployment of the registry (with its child codes, parameters and initial trust lists) to the
embedded chain, the chain server, testnet or mainnet, from one TOML file. See ``scripts/deploy/README.md``.

A library: async over :mod:`node.chain`, no click. Expected failures are
:class:`~node.chain.CocoonError` (:class:`~.deploy.VerificationFailed` when the registry differs
from the file); what happens is told to a :class:`~.report.Report`.

    from node.deploy import Options, load_config, run
    outcome = await run(load_config("deploy.toml"), Options(state_file=Path(".cocoon/chain.json")))

Modules, in the order a run uses them:

* :mod:`.config`  reads and checks the TOML file (:class:`~.config.DeployConfig`);
* :mod:`.keys`    the owner's key and wallet address (never printing the words);
* :mod:`.plan`    the committed artifacts, the expected registry (state init, address) and the
  messages that deploy it or propose the fixes governance needs;
* :mod:`.verify`  what the chain holds at an address, compared field by field with the expectation;
* :mod:`.send`    one message from the owner's wallet, the wait for its effect, what it cost;
* :mod:`.cost`    the cost of a plan: measured on a snapshot of the embedded chain, or estimated on
  a fresh embedded chain with mainnet prices for testnet and mainnet;
* :mod:`.record`  the JSON record of a deployment for the operator;
* :mod:`.report`  how a run tells what happens (the CLI draws it with click);
* :mod:`.deploy`  the run itself: find what exists, send only what is missing, wait, verify, record.

The command is ``cocoon deploy`` (:mod:`node.cli.deploy`), also ``python -m scripts.deploy`` from a
checkout.
"""
from .config import DeployConfig, load_config
from .deploy import EXIT_MISMATCH, Options, Outcome, VerificationFailed, run
from .report import Report

__all__ = ["DeployConfig", "load_config", "EXIT_MISMATCH", "Options", "Outcome", "VerificationFailed", "run",
           "Report"]
