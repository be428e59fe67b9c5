"""The whole network on one machine (``cocoon devnet``): the chain server, the registry deployed by
``scripts/deploy``, a staked and registered proxy, N workers serving SmolLM2 in a simulated TEE and a
client gateway, each its own process, recorded by pid in ``DIR/devnet.json``."""
from .network import DEFAULT_DIR, Devnet, load
from .procs import DevnetError, Reporter
from .state import DevnetState, ProcRecord

__all__ = ["DEFAULT_DIR", "Devnet", "DevnetError", "DevnetState", "ProcRecord", "Reporter", "load"]
