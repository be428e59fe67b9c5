"""The one error of the chain layer."""
from __future__ import annotations


class CocoonError(Exception):
    """An expected failure (bad input, unreachable network, a refused message, too little money).
    Its text is the one-line message shown to the user: what went wrong and what to do."""
