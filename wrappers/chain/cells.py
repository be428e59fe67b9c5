"""Converting cells between pytoniq-core (the project's cell library) and tonpy (the emulator's).

Only the embedded chain's edges convert: messages going in, and what a test asks to read. A BoC is
the one representation both libraries share.
"""
from __future__ import annotations

import base64

from pytoniq_core import Cell
from tonpy.types import Cell as TCell


def to_tonpy(cell: Cell) -> TCell:
    return TCell(base64.b64encode(cell.to_boc()).decode())


def to_pytoniq(cell) -> Cell:
    """A tonpy cell (or anything with tonpy's base64 ``to_boc``) as a pytoniq-core cell."""
    return Cell.one_from_boc(base64.b64decode(cell.to_boc()))
