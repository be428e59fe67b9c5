"""Reproducible contract builds: FunC with tonpy's FunC 0.4.6 + Fift, Tolk with ``@ton/tolk-js``.

Every contract ``contracts/func/<name>.fc`` and ``contracts/tolk/<name>.tolk`` (files starting with an
underscore or named ``stdlib``/``common`` are included, not built) gives one artifact
``contracts/build/<name>.<lang>.json``::

    {"contract", "language", "compiler", "compiler_version", "sources_hash", "code_hash", "code_boc"}

``sources_hash`` is SHA-256 over the relative names and bytes of exactly the files that contract is
built from (its main file and its includes or imports, the compiler's own stdlib excepted), so an
auditor can tie an artifact to its sources and a change to one contract leaves the others' artifacts
as they are. ``check`` rebuilds into memory and names every
contract whose committed artifact differs.
"""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pytoniq_core import Cell

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "contracts"
BUILD = CONTRACTS / "build"
FUNC_VERSION = "0.4.6"
LANGS = ("func", "tolk")
EXT = {"func": ".fc", "tolk": ".tolk"}


class BuildError(Exception):
    """A contract failed to compile; the message is the compiler's, with file and line."""


@dataclass
class Artifact:
    contract: str
    language: str
    compiler: str
    compiler_version: str
    sources_hash: str
    code_hash: str
    code_boc: str

    @property
    def code(self) -> Cell:
        return Cell.one_from_boc(base64.b64decode(self.code_boc))

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"


def contract_names(lang: str, root: Path = CONTRACTS) -> list[str]:
    d = root / lang
    return sorted(p.stem for p in d.glob("*" + EXT[lang])
                  if not p.name.startswith("_") and p.stem not in ("stdlib", "common"))


def sources_hash(files: list[Path], base: Path) -> str:
    """SHA-256 over the relative names and bytes of exactly the files one contract is built from."""
    h = hashlib.sha256()
    for p in sorted(set(files)):
        h.update(p.relative_to(base).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def func_sources(main: Path) -> list[Path]:
    """The main file and everything it #includes, recursively (FunC resolves includes relative to
    the including file)."""
    import re

    seen: list[Path] = []
    todo = [main.resolve()]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        for inc in re.findall(r'^\s*#include\s+"([^"]+)"', p.read_text(), flags=re.M):
            todo.append((p.parent / inc).resolve())
    return seen


def compile_func(name: str, root: Path = CONTRACTS) -> Artifact:
    """Compile in a fresh process: tonpy's FunC keeps state (global variable numbering) between
    compilations in one process, so a contract's code could otherwise depend on build order."""
    import sys

    p = subprocess.run([sys.executable, "-m", "wrappers.build", "func", name, str(root)], capture_output=True,
                       text=True, cwd=str(ROOT))
    if p.returncode == 3:
        raise BuildError(p.stderr.strip())
    if p.returncode != 0:
        raise BuildError(f"FunC {FUNC_VERSION}: {name}.fc: the compiler process failed:\n{p.stderr.strip()[-2000:]}")
    return Artifact(**json.loads(p.stdout))


def _compile_func_here(name: str, root: Path = CONTRACTS) -> Artifact:
    from tonpy.fift.fift import convert_assembler
    from tonpy.libs.python_ton import func_to_asm

    src = root / "func" / f"{name}.fc"
    try:
        asm = func_to_asm([str(src)])
    except RuntimeError as e:
        raise BuildError(f"FunC {FUNC_VERSION}: {name}.fc failed to compile:\n{_relative(str(e), root)}") from None
    try:
        code_t = convert_assembler(asm)
    except Exception as e:  # Fift assembler errors (e.g. a too-long jump)
        raise BuildError(f"Fift assembler: {name}.fc: {e}") from None
    code = Cell.one_from_boc(base64.b64decode(code_t.to_boc()))
    d = (root / "func").resolve()
    return Artifact(name, "func", "func (tonpy)", FUNC_VERSION, sources_hash(func_sources(src), d),
                    code.hash.hex(), base64.b64encode(code.to_boc()).decode())


def _relative(msg: str, root: Path) -> str:
    return msg.replace(str(root.parent) + "/", "")


def _tolk_cli() -> Path:
    cli = ROOT / "node_modules" / "@ton" / "tolk-js" / "dist" / "cli.js"
    if not cli.exists():
        raise BuildError("Tolk compiler not installed: run `npm ci` in the repository root "
                         "(package.json pins @ton/tolk-js)")
    return cli


def compile_tolk(name: str, root: Path = CONTRACTS) -> Artifact:
    cli = _tolk_cli()
    if shutil.which("node") is None:
        raise BuildError("Tolk contracts need Node.js (`node`) on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        p = subprocess.run(["node", str(cli), "--cwd", str(root / "tolk"), "--output-json", str(out), f"{name}.tolk"],
                           capture_output=True, text=True)
        if p.returncode != 0 or not out.exists():
            msg = (p.stdout + p.stderr).strip()
            raise BuildError(f"Tolk: {name}.tolk failed to compile:\n{msg}")
        res = json.loads(out.read_text())
    code = Cell.one_from_boc(base64.b64decode(res["codeBoc64"]))
    d = (root / "tolk").resolve()
    files = [(Path(fn) if Path(fn).is_absolute() else d / fn).resolve()
             for fn in (f["filename"] for f in res.get("sourcesSnapshot", [])) if not fn.startswith("@stdlib")]
    return Artifact(name, "tolk", "@ton/tolk-js", res["tolkVersion"], sources_hash(files, d),
                    code.hash.hex(), base64.b64encode(code.to_boc()).decode())


def compile_contract(name: str, lang: str, root: Path = CONTRACTS) -> Artifact:
    return compile_func(name, root) if lang == "func" else compile_tolk(name, root)


def build_all(out: Path = BUILD, root: Path = CONTRACTS, langs=LANGS, log=print,
              only: str | None = None) -> list[Artifact]:
    out.mkdir(parents=True, exist_ok=True)
    arts = []
    for lang in langs:
        for name in contract_names(lang, root):
            if only and name != only:
                continue
            a = compile_contract(name, lang, root)
            (out / f"{name}.{lang}.json").write_text(a.to_json())
            log(f"  {lang:4}  {name:12} {a.code_hash}")
            arts.append(a)
    return arts


def check(root: Path = CONTRACTS, build: Path = BUILD, log=print) -> list[str]:
    """Rebuild everything and return the problems: a list of human-readable mismatches."""
    problems = []
    for lang in LANGS:
        names = contract_names(lang, root)
        for name in names:
            path = build / f"{name}.{lang}.json"
            fresh = compile_contract(name, lang, root)
            if not path.exists():
                problems.append(f"{name} ({lang}): no committed artifact {path.relative_to(root.parent)}")
                continue
            old = json.loads(path.read_text())
            for k in ("code_hash", "code_boc", "sources_hash", "compiler_version"):
                if old.get(k) != getattr(fresh, k):
                    problems.append(f"{name} ({lang}): committed {k} differs from what the sources produce")
                    break
            else:
                log(f"  ok  {lang:4}  {name:12} {fresh.code_hash}")
        for p in build.glob(f"*.{lang}.json"):
            if p.name.split(".")[0] not in names:
                problems.append(f"{p.name}: artifact without a source")
    return problems


def load_artifact(name: str, lang: str, build: Path = BUILD) -> Artifact:
    path = build / f"{name}.{lang}.json"
    if not path.exists():
        raise BuildError(f"no artifact for {name} ({lang}); run `cocoon build`")
    d = json.loads(path.read_text())
    return Artifact(**d)


def load_code(name: str, lang: str) -> Cell:
    return load_artifact(name, lang).code


if __name__ == "__main__":  # the isolated FunC compiler process used by compile_func
    import sys

    lang, name, root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    try:
        art = _compile_func_here(name, root)
    except BuildError as e:
        print(str(e), file=sys.stderr)
        sys.exit(3)
    print(json.dumps(art.__dict__))
