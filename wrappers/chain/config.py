"""Blockchain configuration for the embedded chain.

The emulator needs a full config dictionary (ConfigParams). We start from the real network config that
tonpy ships for its emulator tests and override the parameters that decide what our contracts pay and
which opcodes they may use, so that fees measured on the embedded chain are the ones mainnet charges:

=========  ==================================================================================
param 8    global version 12, capabilities unchanged. Version 4 (as shipped) rejects opcodes that
           Tolk emits (e.g. ``INMSG_BOUNCED``, TVM 11+).
param 18   storage prices: bit_price_ps 1, cell_price_ps 500 (basechain), mc 1000 / 500000.
param 20   masterchain gas: flat 100 gas for 1,000,000 nanoTON, then 10,000 nanoTON/gas.
param 21   basechain gas: flat 100 gas for 40,000 nanoTON, then 400 nanoTON/gas
           (gas_price 26214400 = 400 × 2^16), gas_limit 1,000,000, gas_credit 10,000.
param 24   masterchain forwarding: lump 10,000,000, bit 655360000, cell 65536000000 (×2^-16).
param 25   basechain forwarding: lump 400,000, bit 26214400, cell 2621440000 (×2^-16),
           first_frac = next_frac = 21845.
=========  ==================================================================================

Source of the values: the TON mainnet configuration as published by explorers (config params 18, 20,
21, 24, 25; e.g. tonviewer.com/config) and the TON documentation's fee pages. They are the prices that
``benchmarks/`` reports fees at. Change them here, in one place, if mainnet votes new ones.
"""
from __future__ import annotations

from functools import lru_cache

from pytoniq_core import Cell, HashMap, begin_cell

GLOBAL_VERSION = 12
CAPABILITIES = 0x2E

BASECHAIN_GAS = dict(flat_gas_limit=100, flat_gas_price=40_000, gas_price=26_214_400, gas_limit=1_000_000,
                     special_gas_limit=1_000_000, gas_credit=10_000, block_gas_limit=10_000_000,
                     freeze_due_limit=100_000_000, delete_due_limit=1_000_000_000)
MASTERCHAIN_GAS = dict(flat_gas_limit=100, flat_gas_price=1_000_000, gas_price=655_360_000,
                       gas_limit=1_000_000, special_gas_limit=35_000_000, gas_credit=10_000,
                       block_gas_limit=2_500_000, freeze_due_limit=100_000_000,
                       delete_due_limit=1_000_000_000)
BASECHAIN_FWD = dict(lump_price=400_000, bit_price=26_214_400, cell_price=2_621_440_000,
                     ihr_price_factor=98_304, first_frac=21_845, next_frac=21_845)
MASTERCHAIN_FWD = dict(lump_price=10_000_000, bit_price=655_360_000, cell_price=65_536_000_000,
                       ihr_price_factor=98_304, first_frac=21_845, next_frac=21_845)
STORAGE = dict(utime_since=0, bit_price_ps=1, cell_price_ps=500, mc_bit_price_ps=1000,
               mc_cell_price_ps=500_000)


def _gas_cell(g: dict) -> Cell:
    # gas_flat_pfx#d1 flat_gas_limit:uint64 flat_gas_price:uint64 other:GasLimitsPrices
    # gas_prices_ext#de gas_price:uint64 gas_limit:uint64 special_gas_limit:uint64 gas_credit:uint64
    #                   block_gas_limit:uint64 freeze_due_limit:uint64 delete_due_limit:uint64
    b = begin_cell().store_uint(0xD1, 8).store_uint(g["flat_gas_limit"], 64).store_uint(g["flat_gas_price"], 64)
    b.store_uint(0xDE, 8)
    for k in ("gas_price", "gas_limit", "special_gas_limit", "gas_credit", "block_gas_limit",
              "freeze_due_limit", "delete_due_limit"):
        b.store_uint(g[k], 64)
    return b.end_cell()


def _fwd_cell(f: dict) -> Cell:
    # msg_forward_prices#ea lump_price:uint64 bit_price:uint64 cell_price:uint64
    #                       ihr_price_factor:uint32 first_frac:uint16 next_frac:uint16
    return (begin_cell().store_uint(0xEA, 8).store_uint(f["lump_price"], 64).store_uint(f["bit_price"], 64)
            .store_uint(f["cell_price"], 64).store_uint(f["ihr_price_factor"], 32)
            .store_uint(f["first_frac"], 16).store_uint(f["next_frac"], 16).end_cell())


def _storage_cell(s: dict) -> Cell:
    # _ (Hashmap 32 StoragePrices) = ConfigParam 18;
    # storage_prices#cc utime_since:uint32 bit_price_ps:uint64 cell_price_ps:uint64
    #                   mc_bit_price_ps:uint64 mc_cell_price_ps:uint64
    price = (begin_cell().store_uint(0xCC, 8).store_uint(s["utime_since"], 32).store_uint(s["bit_price_ps"], 64)
             .store_uint(s["cell_price_ps"], 64).store_uint(s["mc_bit_price_ps"], 64)
             .store_uint(s["mc_cell_price_ps"], 64).end_cell())
    hm = HashMap(32, value_serializer=lambda v, b: b.store_slice(v.begin_parse()))
    hm.set_int_key(0, price)
    return hm.serialize()


def _load_base() -> dict[int, Cell]:
    from tonpy.data_for_tests.emulator_data import tx  # a real network config, as a BoC

    root = Cell.one_from_boc(tx["config"])
    return HashMap.parse(root.begin_parse(), 32, lambda k: int(k, 2), lambda s: s.load_ref())


@lru_cache(maxsize=1)
def config_cell() -> Cell:
    """The config dictionary root cell the emulator and get-methods (c7) use."""
    params = _load_base()
    params[8] = (begin_cell().store_uint(0xC4, 8).store_uint(GLOBAL_VERSION, 32)
                 .store_uint(CAPABILITIES, 64).end_cell())
    params[18] = _storage_cell(STORAGE)
    params[20] = _gas_cell(MASTERCHAIN_GAS)
    params[21] = _gas_cell(BASECHAIN_GAS)
    params[24] = _fwd_cell(MASTERCHAIN_FWD)
    params[25] = _fwd_cell(BASECHAIN_FWD)
    hm = HashMap(32, value_serializer=lambda v, b: b.store_ref(v))
    for k, v in params.items():
        hm.set_int_key(k, v)
    return hm.serialize()


def gas_fee(gas_used: int, gas: dict = BASECHAIN_GAS) -> int:
    """Compute fee in nanoTON for ``gas_used`` at the configured prices (as the validator computes it)."""
    if gas_used <= gas["flat_gas_limit"]:
        return gas["flat_gas_price"]
    extra = gas_used - gas["flat_gas_limit"]
    return gas["flat_gas_price"] + -(-extra * gas["gas_price"] // 65536)
