"""The ``cocoon`` command line: all the project's click code, one module per command group.

``root`` holds the root group ``main`` and registers the groups (``attest``, ``chain``, ``client``,
``demo``, ``deploy``, ``devnet``, ``escrow``, ``proxy``, ``receipt``, ``registry``, ``reputation``,
``stake``, ``wallet``, ``worker``); ``options`` holds the option types and parsers the groups share;
``context`` is the synchronous click adapter over :mod:`node.chain`.

Importing this package loads nothing else, so ``python -m node.cli.worker`` starts without the other
groups (and without tonpy) loaded; ``node.cli.main`` is the root group, imported on first use.
"""
from __future__ import annotations


def __getattr__(name: str):
    if name == "main":
        from .root import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
