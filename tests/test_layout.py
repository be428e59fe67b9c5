"""The layout's rules, checked on the source: libraries load no click, nothing imports `scripts`,
lower layers never import higher ones, no `scripts` package is installed, and the one table of exit
codes (wrappers/errors.py) says what the schemas say."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# node.<package> -> the node packages it must never import (DESIGN.md §2: wrappers < node.chain,
# node.tee < node.openai, node.link < services < CLI). node.deploy is a library below the CLI.
SERVICES_AND_CLI = ("node.worker", "node.proxy", "node.client", "node.devnet", "node.cli", "node.lifecycle")
LOWER = {"node.chain": SERVICES_AND_CLI + ("node.openai", "node.link", "node.deploy"),
         "node.payments": SERVICES_AND_CLI + ("node.openai", "node.link", "node.deploy"),
         "node.durable": SERVICES_AND_CLI + ("node.openai", "node.link", "node.deploy"),
         "node.tee": SERVICES_AND_CLI + ("node.openai", "node.link", "node.deploy"),
         "node.openai": SERVICES_AND_CLI + ("node.deploy",),
         "node.link": SERVICES_AND_CLI + ("node.deploy",),
         "node.deploy": SERVICES_AND_CLI}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function, relative imports resolved."""
    mod = _module(path)
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for n in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(n, ast.Import):
            out.update(a.name for a in n.names)
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (n.level - 1)]
                full = ".".join(base + ([n.module] if n.module else []))
            else:
                full = n.module or ""
            out.add(full)
            out.update(f"{full}.{a.name}" for a in n.names)
    return out


def _sources(*dirs: str) -> list[Path]:
    return [p for d in dirs for p in sorted((ROOT / d).rglob("*.py"))]


def _hits(imports: set[str], prefix: str) -> list[str]:
    """The imports of ``prefix`` or below it (``node.cli`` covers the whole node/cli/ package)."""
    pat = re.compile(re.escape(prefix) + r"(\.|$)")
    return sorted(i for i in imports if pat.match(i))


def test_the_scan_sees_imports_that_break_the_rules(tmp_path):
    """The checker itself: a relative import two levels up and a lazy import inside a function count."""
    d = ROOT / "node" / "chain"
    fake = d / "_layout_probe.py"
    fake.write_text("def f():\n    from ..worker import app\n    import scripts.deploy\n")
    try:
        got = _imports(fake)
    finally:
        fake.unlink()
    assert "node.worker.app" in got and "scripts.deploy" in got


def _loaded_click(packages: list[str], walk_wrappers: bool = False) -> tuple[int, list[str]]:
    """Import ``packages`` and every module below them in a fresh interpreter: (how many modules,
    which click modules got loaded)."""
    code = ("import importlib, pkgutil, sys, wrappers\n"
            f"mods = []\nfor name in {packages!r}:\n"
            "    m = importlib.import_module(name)\n    mods.append(name)\n"
            "    for sub in pkgutil.walk_packages(getattr(m, '__path__', []), name + '.'):\n"
            "        importlib.import_module(sub.name)\n        mods.append(sub.name)\n"
            "print(len(mods), sorted(m for m in sys.modules if m == 'click' or m.startswith('click.')))\n")
    r = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    count, loaded = r.stdout.strip().splitlines()[-1].split(" ", 1)
    return int(count), eval(loaded)


def test_libraries_load_no_click():
    """node.chain, node.payments, node.link, node.openai, node.deploy, node.tee and every wrappers
    module, each with every module below it, import without click, in a fresh interpreter."""
    libs = ["wrappers", "node.chain", "node.link", "node.openai", "node.deploy", "node.tee"]
    if (ROOT / "node" / "payments").exists():
        libs.append("node.payments")
    count, loaded = _loaded_click(libs)
    assert count > 40 and loaded == []


def test_services_load_no_click():
    """The services (worker, proxy, client gateway), the devnet runner and the lifecycle story have
    no click either: it stays in node/cli/."""
    count, loaded = _loaded_click(["node.worker", "node.proxy", "node.client", "node.devnet", "node.lifecycle"])
    assert count > 20 and loaded == []


def test_click_is_imported_only_under_node_cli():
    """An AST scan: no module of node/ (outside node/cli/), wrappers/, scripts/ or benchmarks/ imports click."""
    bad = {}
    for p in _sources("node", "wrappers", "scripts", "benchmarks"):
        if p.is_relative_to(ROOT / "node" / "cli"):
            continue
        hits = _hits(_imports(p), "click")
        if hits:
            bad[str(p.relative_to(ROOT))] = hits
    assert bad == {}
    assert _hits(_imports(ROOT / "node" / "cli" / "root.py"), "click") == ["click"]     # the scan sees click


def test_the_worker_restarts_without_the_other_command_groups():
    """`cocoon worker run` re-executes itself as `python -m node.cli.worker` to load the model before
    tonpy: importing node.cli.worker loads neither tonpy nor another group's module, and
    `python -m node.cli` is the whole `cocoon` command."""
    code = ("import json, sys, node.cli.worker\n"
            "print(json.dumps(['tonpy' in sys.modules, sorted(m for m in sys.modules if m.startswith('node.cli.'))]))\n")
    r = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    tonpy, cli = json.loads(r.stdout.strip().splitlines()[-1])
    assert not tonpy and "node.cli.worker" in cli and set(cli) <= {"node.cli.worker", "node.cli.options",
                                                                     "node.cli.context"}, r.stdout
    r = subprocess.run([PY, "-m", "node.cli", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("Usage: cocoon ") and "registry" in r.stdout, r.stderr


def test_nothing_in_node_or_wrappers_imports_scripts():
    bad = {_module(p): _hits(_imports(p), "scripts") for p in _sources("node", "wrappers")}
    assert {m: h for m, h in bad.items() if h} == {}


def test_wrappers_never_import_node():
    bad = {_module(p): _hits(_imports(p), "node") for p in _sources("wrappers")}
    assert {m: h for m, h in bad.items() if h} == {}


@pytest.mark.parametrize("layer", sorted(LOWER))
def test_lower_layers_never_import_higher_ones(layer):
    pkg = ROOT.joinpath(*layer.split("."))
    files = sorted(pkg.rglob("*.py")) if pkg.is_dir() else [f for f in [pkg.with_suffix(".py")] if f.exists()]
    if not files:
        pytest.skip(f"{layer} does not exist")
    bad = {}
    for p in files:
        imps = _imports(p)
        hits = [h for higher in LOWER[layer] for h in _hits(imps, higher)]
        if hits:
            bad[_module(p)] = hits
    assert bad == {}


def test_services_never_import_the_cli():
    bad = {}
    for svc in ("worker", "proxy", "client"):
        for p in sorted((ROOT / "node" / svc).rglob("*.py")):
            hits = _hits(_imports(p), "node.cli")
            if hits:
                bad[_module(p)] = hits
    assert bad == {}


def test_no_scripts_package_is_installed(tmp_path):
    """Outside the checkout `scripts` is not importable: the distribution installs node and wrappers only."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([PY, "-c", "import node, wrappers\nimport scripts"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "No module named 'scripts'" in r.stderr, (r.stdout, r.stderr)


def test_cli_registers_its_groups_by_plain_imports():
    """node/cli/root.py imports every command's module by name (a missing one is an ImportError, not a
    silently absent command), each command comes from its own module, and no CLI module imports
    another's underscore helper."""
    src = (ROOT / "node" / "cli" / "root.py").read_text()
    assert "importlib" not in src
    from node.cli import main
    from node.cli.root import main as root_main

    assert main is root_main
    for name in ("attest", "build", "registry", "worker", "demo", "stake", "escrow", "reputation", "deploy",
                 "chain", "wallet", "client", "receipt", "proxy", "devnet"):
        assert name in main.commands, name
        assert main.commands[name].callback.__module__ == f"node.cli.{name}", name   # one module per group
    bad = {}
    for p in sorted((ROOT / "node" / "cli").glob("*.py")):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("node.cli")):
                private = [a.name for a in n.names if a.name.startswith("_")]
                if private:
                    bad[p.name] = private
    assert bad == {}


def test_ton_is_defined_once():
    """``TON = 10**9`` lives in wrappers/__init__.py; every other module imports it."""
    defs = []
    for p in _sources("node", "wrappers", "tests", "benchmarks", "scripts"):
        for n in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "TON" for t in n.targets):
                defs.append(str(p.relative_to(ROOT)))
    assert defs == ["wrappers/__init__.py"]
    from wrappers import TON, escrow, registry, reputation, stake

    assert TON == 10**9 and escrow.TON is registry.TON is reputation.TON is stake.TON is TON


# ------------------------------------------------------------------------------ the exit-code table
def _schema_codes() -> dict[int, tuple[str, str]]:
    """``//   405  stale_voucher   meaning`` lines of the schemas' error tables."""
    out = {}
    for name in ("common", "stake", "escrow", "reputation"):
        for line in (ROOT / "contracts" / f"{name}.tlb").read_text().splitlines():
            m = re.match(r"//\s+(\d{3})  +([a-z_]+)  +(.*\S)\s*$", line)
            if m:
                out[int(m[1])] = (m[2], m[3])
    return out


def test_the_error_table_is_the_schemas():
    from wrappers.errors import ERRORS

    assert ERRORS == _schema_codes()


@pytest.mark.parametrize("contract", ["registry", "stake", "escrow", "reputation"])
def test_each_wrapper_names_its_codes_from_the_table(contract):
    import importlib

    from wrappers.errors import ERRORS, RANGES

    w = importlib.import_module(f"wrappers.{contract}")
    lo, hi = RANGES[contract]
    own = {v: k.lower() for k, v in vars(w.Err).items() if isinstance(v, int) and lo <= v < hi}
    assert own and all(ERRORS[c][0] == n for c, n in own.items()), own      # Err spells the table's names
    assert {c for c in ERRORS if lo <= c < hi} == set(own)                 # ... every one of them
    assert all(w.ERROR_NAMES[c] == ERRORS[c][0] for c in w.ERROR_NAMES)
    assert set(range(100, 106)) <= set(w.ERROR_NAMES)
    assert w.describe_error(101) == "101 (not_owner)" and w.describe_error(7) == "7 (tvm)"
