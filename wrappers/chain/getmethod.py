"""Running get-methods of accounts on the embedded chain with tonpy's TVM.

The stack comes back in pytoniq's form (``int``, ``Cell``, ``Slice``, ``None``, ``list`` for tuples), the
same form pytoniq's lite client returns, so wrapper code parses getters the same way on every network.
"""
from __future__ import annotations

from typing import Any

from pytoniq_core import Address, Builder, Cell, Slice, begin_cell
from tonpy.tvm.c7 import C7
from tonpy.tvm.tvm import TVM, method_name_to_id
from tonpy.types import Cell as TCell, CellSlice as TSlice, CellBuilder as TBuilder

from .cells import to_pytoniq, to_tonpy

GET_METHOD_GAS = 1_000_000


class GetMethodError(Exception):
    def __init__(self, address: Address, method: str | int, exit_code: int):
        super().__init__(f"get-method {method!r} of {address.to_str()} failed with exit code {exit_code}")
        self.address, self.method, self.exit_code = address, method, exit_code


def to_tvm(v: Any) -> Any:
    if isinstance(v, bool):
        return -1 if v else 0
    if isinstance(v, int) or v is None:
        return v
    if isinstance(v, Address):
        return to_tonpy(begin_cell().store_address(v).end_cell()).begin_parse()
    if isinstance(v, Cell):
        return to_tonpy(v)
    if isinstance(v, Slice):
        return to_tonpy(begin_cell().store_slice(v).end_cell()).begin_parse()
    if isinstance(v, Builder):
        return to_tonpy(v.end_cell()).begin_parse()
    if isinstance(v, (list, tuple)):
        return [to_tvm(x) for x in v]
    raise TypeError(f"cannot pass {type(v).__name__} to a get-method")


def from_tvm(v: Any) -> Any:
    if v is None or isinstance(v, int):
        return v
    if isinstance(v, TCell):
        return to_pytoniq(v)
    if isinstance(v, TSlice):
        return to_pytoniq(v.to_cell()).begin_parse()
    if isinstance(v, TBuilder):
        return to_pytoniq(v.end_cell())
    if isinstance(v, (list, tuple)):
        return [from_tvm(x) for x in v]
    return v


def run_get_method(code: Cell | TCell, data: Cell | TCell, address: Address, method: str | int, stack: list, *,
                   balance: int, now: int, config: Cell | TCell, gas: list | None = None) -> list:
    """Run ``method`` and return the result stack, bottom first (as pytoniq's clients do).
    Cells may be given in the emulator's own form (tonpy) to save conversions. If ``gas`` is a
    list, the gas the method used is appended to it (also when it fails)."""
    code_t = code if isinstance(code, TCell) else to_tonpy(code)
    data_t = data if isinstance(data, TCell) else to_tonpy(data)
    config_t = config if isinstance(config, TCell) else to_tonpy(config)
    tvm = TVM(code=code_t, data=data_t)
    tvm.set_c7(C7(time=now, balance_grams=balance, address=to_tonpy(begin_cell().store_address(address).end_cell()).begin_parse(),
                  global_config=config_t, my_code=code_t))
    tvm.set_gas_limit(GET_METHOD_GAS)
    mid = method if isinstance(method, int) else method_name_to_id(method)
    tvm.set_stack([to_tvm(x) for x in stack] + [mid])
    result = tvm.run(unpack_stack=False, allow_non_success=True)
    if gas is not None:
        gas.append(int(tvm.gas_used))
    if tvm.exit_code not in (0, 1):
        raise GetMethodError(address, method, tvm.exit_code)
    values = result.unpack_rec()
    return [from_tvm(x) for x in values]
